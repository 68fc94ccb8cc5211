'use strict';

// "Run Project": runs one of the account's projects (the gateway action run-project).
// The form is the project dropdown (hidden trigger project_list), then one field per
// variable of the chosen project (GET /api/project/get, re-read when project_id changes),
// then seed and use_cache. The run itself is the usual async action: ?wait=0 plus a
// callback URL, finished by performResume (creates/action.js).

const { baseUrl } = require('../lib/common');
const { coerce, toZapierField } = require('../lib/fields');
const {
  META_SAMPLE, performResume, SAMPLE_COMPOSITION, startAsync,
} = require('./action');

const ACTION = 'run-project';
const VAR_PREFIX = 'var__'; // variable names never collide with the fixed fields

const varKey = (name) => `${VAR_PREFIX}${name}`;

const fetchProject = async (z, projectId) => {
  const response = await z.request({
    url: `${baseUrl()}/api/project/get`,
    method: 'GET',
    params: { project_id: projectId },
  });
  return response.data || {};
};

const variablesOf = (project) => (Array.isArray(project.variables) ? project.variables : []);

// A project variable as the catalogue-style field lib/fields.js already maps to Zapier.
const asGatewayField = (variable) => {
  let help = variable.help || '';
  if (variable.type === 'image') {
    help = help ? `${help} (an image URL)` : 'An image URL.';
  }
  return {
    key: varKey(variable.name),
    label: variable.name,
    required: Boolean(variable.required),
    type: variable.type === 'number' ? 'number' : 'string',
    helpText: help || undefined,
    default: variable.default,
  };
};

const variableFields = async (z, bundle) => {
  const projectId = bundle.inputData && bundle.inputData.project_id;
  if (!projectId) {
    return []; // nothing chosen yet: Zapier asks again once project_id is set
  }
  return variablesOf(await fetchProject(z, projectId)).map((v) => toZapierField(asGatewayField(v)));
};

const isEmpty = (v) => v === undefined || v === null || v === '';

// inputData -> {name: typed value} for the project's declared variables only (the gateway
// rejects unknown ones); empty ones are left out so the project's defaults apply.
const variableValues = (variables, inputData) => {
  const out = {};
  variables.forEach((variable) => {
    const value = (inputData || {})[varKey(variable.name)];
    if (!isEmpty(value)) {
      out[variable.name] = coerce(asGatewayField(variable), value);
    }
  });
  return out;
};

const bodyFor = async (z, inputData) => {
  const project = await fetchProject(z, inputData.project_id);
  const body = {
    project_id: inputData.project_id,
    variables: variableValues(variablesOf(project), inputData),
    use_cache: isEmpty(inputData.use_cache) ? true : coerce({ type: 'boolean' }, inputData.use_cache),
  };
  if (!isEmpty(inputData.seed)) {
    body.seed = coerce({ type: 'integer' }, inputData.seed);
  }
  return body;
};

const perform = async (z, bundle) => startAsync(z, ACTION, await bodyFor(z, bundle.inputData || {}));

module.exports = {
  key: 'run_project',
  noun: 'Project Run',
  display: {
    label: 'Run Project',
    description: 'Runs one of your projects with the given variables and returns its outputs.',
  },
  operation: {
    inputFields: [
      {
        key: 'project_id',
        label: 'Project',
        required: true,
        dynamic: 'project_list.id.name',
        altersDynamicFields: true,
        helpText: 'The project to run; its variables appear below once it is chosen.',
      },
      variableFields,
      {
        key: 'seed',
        label: 'Seed',
        type: 'integer',
        required: false,
        helpText: 'The same seed and inputs give the same images. Empty: a random seed.',
      },
      {
        key: 'use_cache',
        label: 'Use Cache',
        type: 'boolean',
        required: false,
        default: 'true',
        helpText: 'Reuse (and pay nothing for) node results of earlier runs with the same inputs.',
      },
    ],
    perform,
    performResume: (z, bundle) => performResume(z, bundle),
    sample: {
      ...SAMPLE_COMPOSITION,
      action: ACTION,
      outputs: [{
        type: 'image', name: 'picture', format: 'png', width: 1024, height: 1024,
        url: 'https://gateway.example/outputs/comp_79bf7c0b0b04080e8ce8/out.png',
      }],
      meta: META_SAMPLE,
    },
    outputFields: [
      { key: 'id', label: 'Run ID' },
      { key: 'status', label: 'Status' },
      { key: 'outputs[]name', label: 'Output Names' },
      { key: 'outputs[]url', label: 'Output URLs' },
      { key: 'txnReceipt', label: 'Receipt' },
      { key: 'meta__creditsUsed', label: 'Credits Used', type: 'integer' },
    ],
  },
  ACTION,
  asGatewayField,
  bodyFor,
  variableFields,
  variableValues,
  varKey,
};
