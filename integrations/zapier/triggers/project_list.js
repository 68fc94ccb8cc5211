'use strict';

// Hidden trigger feeding the "Run Project" create's project dropdown:
// GET /api/project/list/mine?page=N&limit=100 -> {projects: [{project_id, name, ...}], ...}.
// Zapier asks for more with bundle.meta.page (0, 1, 2...; the gateway's pages start at 1)
// and stops when a page comes back empty.

const { baseUrl } = require('../lib/common');

const PAGE_SIZE = 100;

const toChoice = (project) => ({
  ...project,
  id: project.project_id,
  name: project.name || project.title || project.project_id,
});

const listProjects = async (z, bundle) => {
  const zapierPage = Number((bundle && bundle.meta && bundle.meta.page) || 0);
  const response = await z.request({
    url: `${baseUrl()}/api/project/list/mine`,
    method: 'GET',
    params: { page: zapierPage + 1, limit: PAGE_SIZE },
  });
  const projects = (response.data && response.data.projects) || [];
  return projects.map(toChoice);
};

module.exports = {
  key: 'project_list',
  noun: 'Project',
  display: {
    label: 'List Projects',
    description: 'Lists your projects (feeds the Run Project dropdown).',
    hidden: true,
  },
  operation: {
    type: 'polling',
    canPaginate: true,
    perform: (z, bundle) => listProjects(z, bundle),
    sample: { id: 'prj_0123456789abcdef', project_id: 'prj_0123456789abcdef', name: 'Sale banner' },
    outputFields: [
      { key: 'id', label: 'Project ID' },
      { key: 'name', label: 'Name' },
    ],
  },
  listProjects,
  PAGE_SIZE,
  toChoice,
};
