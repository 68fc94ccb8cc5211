'use strict';

// Hidden trigger feeding the content dropdowns (generate-product-listing's Product Content,
// Upload File's New Version Of): the account's content items and those shared with it,
// newest first, GET /content/list?limit=100&offset=N. Zapier asks for more with
// bundle.meta.page (0, 1, 2...; canPaginate) and stops at an empty page.

const { baseUrl } = require('../lib/common');
const { asItem, SAMPLE_ITEM } = require('../creates/upload_file');

const PAGE_SIZE = 100;

// What the dropdown shows: the file name, its kind and day, so versions and look-alike
// names can be told apart.
const labelOf = (item) => `${item.fileName || item.contentId} (${item.type || 'file'}`
  + `${item.createdAt ? `, ${String(item.createdAt).slice(0, 10)}` : ''})`;

const listContent = async (z, bundle) => {
  const page = Number((bundle && bundle.meta && bundle.meta.page) || 0);
  const response = await z.request({
    url: `${baseUrl()}/content/list`,
    method: 'GET',
    params: { limit: PAGE_SIZE, offset: page * PAGE_SIZE },
  });
  return ((response.data && response.data.items) || [])
    .map((item) => ({ ...asItem(item), label: labelOf(item) }));
};

module.exports = {
  key: 'content_list',
  noun: 'Content',
  display: {
    label: 'List Content',
    description: 'Lists your content library (feeds the content dropdowns).',
    hidden: true,
  },
  operation: {
    type: 'polling',
    canPaginate: true,
    perform: (z, bundle) => listContent(z, bundle),
    sample: { ...SAMPLE_ITEM, label: labelOf(SAMPLE_ITEM) },
    outputFields: [
      { key: 'id', label: 'Content ID' },
      { key: 'label', label: 'Label' },
      { key: 'fileName', label: 'File Name' },
      { key: 'type', label: 'Type' },
    ],
  },
  PAGE_SIZE,
  labelOf,
  listContent,
};
