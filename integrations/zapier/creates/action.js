'use strict';

// One create per gateway action. Which creates exist is fixed at load time from
// catalogue.snapshot.json (a Zapier app version has a static list of operations);
// each create's input fields are built live from GET /zapier/v1/actions.

const { baseUrl, fetchCatalogue, fetchModels, findAction, pickMeta } = require('../lib/common');
const { buildBody, offered, titleCase, toZapierField } = require('../lib/fields');
const snapshot = require('../catalogue.snapshot.json');

// Actions with a create of their own (a richer form than the catalogue's fields can
// describe): the generic create is not built for them, and their create's key is this.
const DEDICATED = {
  'run-project': 'run_project', // creates/run_project.js
  upload: 'upload_file', // creates/upload_file.js
};

// Actions that change nothing and only answer a question: a Zapier search, not a create
// (searches/estimate_cost.js); no create is built for them.
const SEARCHES = {
  'estimate-cost': 'estimate_cost',
};

// Actions that exist to prove a connection end to end (they cost a credit and return
// what they were sent): still usable from an existing Zap, but hidden from the Zap editor.
const DEBUG = new Set(['echo', 'echo-async']);

// Actions the app already offers in a better shape: hidden from the Zap editor like DEBUG.
// `health` is the connection test's job (GET /zapier/v1/me); `list-posts` is the New Post
// trigger (triggers/new_post.js), which polls the same list.
const COVERED = new Set(['health', 'list-posts']);

// Zapier keys: letters first, then letters, digits and underscores.
const createKey = (name) => DEDICATED[name] || `run_${name.replace(/[^A-Za-z0-9]+/g, '_')}`;

// The longest a synchronous POST waits when no callback URL is available (Zapier gives
// a step about 30 seconds).
const FALLBACK_WAIT_S = 20;

// Content ids an action reads as input: a dropdown of the library (hidden content_list).
const CONTENT_FIELDS = new Set(['product_content_id']);

const modelChoices = (values) => values.map((v) => ({ value: String(v), label: String(v), sample: String(v) }));

// The generation fields that depend on the model (GET /getModels): the Model dropdown
// reloads the form when it changes, and sizes and samplers offer the chosen model's own
// values (the default model, the first listed, until one is chosen), so the form cannot
// produce the "must be one of ... for <model>" refusal.
const applyModel = (fields, models, chosen) => {
  const model = models.find((m) => m.modelID === chosen) || models[0];
  fields.forEach((f) => {
    if (f.key === 'modelName') {
      delete f.choices;
      f.dynamic = 'model_list.id.name';
      f.altersDynamicFields = true;
    }
    if (!model) {
      return;
    }
    const name = model.name || model.modelID;
    if (f.key === 'width' && model.allowedWidths) {
      f.choices = modelChoices(model.allowedWidths);
      f.default = String(model.defaultResolution ? model.defaultResolution[0] : model.allowedWidths[0]);
    } else if (f.key === 'height' && model.allowedHeights) {
      f.choices = modelChoices(model.allowedHeights);
      f.default = String(model.defaultResolution ? model.defaultResolution[1] : model.allowedHeights[0]);
    } else if (f.key === 'sampler' && model.allowedSamplers) {
      f.choices = modelChoices(model.allowedSamplers);
      if (model.defaultSampler) {
        f.default = model.defaultSampler;
      }
    } else if (f.key === 'steps' && model.maxSteps) {
      f.helpText = `Denoising steps, ${model.minSteps}-${model.maxSteps} for ${name} `
        + `(default ${model.defaultSteps}).`;
    } else if (f.key === 'frames' && model.maxFrames) {
      f.helpText = `Frames in the clip, 2-${model.maxFrames} for ${name} (default 8).`;
    }
  });
  return fields;
};

const inputFieldsFor = (name) => async (z, bundle) => {
  const action = await findAction(z, name);
  if (!action) {
    throw new z.errors.Error(
      `The gateway no longer offers the action "${name}".`, 'INVALID_ACTION', 404);
  }
  const fields = offered(action.inputFields).map(toZapierField);
  fields.forEach((f) => {
    if (CONTENT_FIELDS.has(f.key)) {
      f.dynamic = 'content_list.id.label';
    }
  });
  if (fields.some((f) => f.key === 'modelName')) {
    const chosen = bundle && bundle.inputData && bundle.inputData.modelName;
    applyModel(fields, await fetchModels(z), chosen);
  }
  return fields;
};

const bodyFor = async (z, name, inputData) => {
  const action = await findAction(z, name);
  if (!action) {
    throw new z.errors.Error(
      `The gateway no longer offers the action "${name}".`, 'INVALID_ACTION', 404);
  }
  return buildBody(action.inputFields, inputData);
};

const withId = (composition) => ({ id: composition.uid, ...composition });

// The callback body is the webhook envelope {type, timestamp, data: {composition}};
// accept a bare composition too.
const compositionFrom = (payload) => {
  if (!payload || typeof payload !== 'object') {
    return null;
  }
  if (payload.data && payload.data.composition) {
    return payload.data.composition;
  }
  if (payload.composition) {
    return payload.composition;
  }
  return payload.uid ? payload : null;
};

const finalResult = (z, composition, previous) => {
  if (composition.status === 'failed' || composition.status === 'cancelled') {
    const err = composition.error || {};
    const refund = composition.refundReceipt ? ` Refunded (${composition.refundReceipt}).` : '';
    throw new z.errors.Error(
      `Composition ${composition.uid} ${composition.status}: ${err.message || 'no reason given'}.${refund}`,
      err.code || `COMPOSITION_${composition.status.toUpperCase()}`, 422);
  }
  return { ...(previous || {}), ...withId(composition) };
};

const syncPerform = (name) => async (z, bundle) => {
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/${name}`,
    method: 'POST',
    body: await bodyFor(z, name, bundle.inputData),
  });
  return { ...response.data, meta: pickMeta(response.meta) };
};

// Long actions: start the job without waiting and hand Zapier a callback URL; the gateway
// POSTs the final composition there and Zapier resumes the step with performResume.
// `body` is the action's JSON body, already typed (a dedicated create builds its own).
const startAsync = async (z, name, body) => {
  const callbackUrl = z.generateCallbackUrl ? z.generateCallbackUrl() : null;
  if (callbackUrl) {
    body.callback_url = callbackUrl;
  }
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/${name}`,
    method: 'POST',
    params: { wait: callbackUrl ? 0 : FALLBACK_WAIT_S },
    body,
  });
  const composition = (response.data && response.data.composition) || {};
  const out = { ...withId(composition), meta: pickMeta(response.meta) };
  return callbackUrl ? out : finalResult(z, composition, out);
};

const asyncPerform = (name) => async (z, bundle) =>
  startAsync(z, name, await bodyFor(z, name, bundle.inputData));

const performResume = async (z, bundle) => {
  const composition = compositionFrom(bundle.cleanedRequest);
  if (!composition) {
    throw new z.errors.Error('The callback did not carry a composition.', 'INVALID_CALLBACK', 400);
  }
  return finalResult(z, composition, bundle.outputData);
};

// A composition exactly as GET /zapier/v1/compositions and the webhooks show one
// (jobs/views.py composition_json), plus `id` (= uid, for Zapier's dedupe).
const SAMPLE_COMPOSITION = {
  uid: 'comp_79bf7c0b0b04080e8ce8',
  action: 'generate-product-listing',
  status: 'completed',
  progress: 100,
  outputs: [{
    type: 'image', kind: 'main', url: 'https://gateway.example/outputs/comp_79bf7c0b0b04080e8ce8/main.jpg',
    format: 'jpg', width: 1200, height: 1200,
  }],
  error: null,
  txnReceipt: 'txn_a8eafbce1ce956d2afe1985f',
  refundReceipt: null,
  creditsUsed: 25,
  createdAt: '2025-01-14T10:30:00.000Z',
  startedAt: '2025-01-14T10:30:00.500Z',
  finishedAt: '2025-01-14T10:30:04.000Z',
  links: {
    status: 'https://gateway.example/zapier/v1/compositions/comp_79bf7c0b0b04080e8ce8',
    events: 'https://gateway.example/zapier/v1/compositions/comp_79bf7c0b0b04080e8ce8/events',
    cancel: 'https://gateway.example/zapier/v1/compositions/comp_79bf7c0b0b04080e8ce8/cancel',
  },
  id: 'comp_79bf7c0b0b04080e8ce8',
};

const META_SAMPLE = { creditsUsed: 1, availableCredit: 99, txnReceipt: 'txn_0123456789abcdef01234567' };

const META_OUTPUT_FIELDS = [
  { key: 'meta__txnReceipt', label: 'Receipt' },
  { key: 'meta__creditsUsed', label: 'Credits Used', type: 'integer' },
  { key: 'meta__availableCredit', label: 'Credits Left', type: 'integer' },
];

// What an async create returns: the composition (queued, then final after performResume).
const COMPOSITION_CREATE_OUTPUT_FIELDS = [
  { key: 'id', label: 'Composition UID' },
  { key: 'action', label: 'Action' },
  { key: 'status', label: 'Status' },
  { key: 'outputs[]type', label: 'Output Types' },
  { key: 'outputs[]url', label: 'Output URLs' },
  { key: 'outputs[]width', label: 'Output Widths', type: 'integer' },
  { key: 'outputs[]height', label: 'Output Heights', type: 'integer' },
  { key: 'txnReceipt', label: 'Receipt' },
  { key: 'creditsUsed', label: 'Credits Used', type: 'integer' },
  { key: 'finishedAt', label: 'Finished At', type: 'datetime' },
];

// Sync actions' answers (samples and output fields), by action name.
const SYNC = {
  echo: {
    sample: { message: 'hello', length: 5, uppercase: null, meta: META_SAMPLE },
    outputFields: [
      { key: 'message', label: 'Message' },
      { key: 'length', label: 'Length', type: 'integer' },
      { key: 'uppercase', label: 'Uppercase' },
    ],
  },
};

const makeCreate = (action) => {
  const title = titleCase(action.title || action.name);
  const sync = SYNC[action.name] || { sample: { meta: META_SAMPLE }, outputFields: [] };
  const create = {
    key: createKey(action.name),
    noun: title,
    display: {
      label: title,
      description: (action.description || `Runs the gateway action ${action.name}.`).slice(0, 1000),
      ...(DEBUG.has(action.name) || COVERED.has(action.name) ? { hidden: true } : {}),
    },
    operation: {
      inputFields: [inputFieldsFor(action.name)],
      perform: action.async ? asyncPerform(action.name) : syncPerform(action.name),
      sample: action.async
        ? { ...SAMPLE_COMPOSITION, action: action.name, meta: META_SAMPLE }
        : sync.sample,
      outputFields: action.async
        ? [...COMPOSITION_CREATE_OUTPUT_FIELDS, ...META_OUTPUT_FIELDS]
        : [...sync.outputFields, ...META_OUTPUT_FIELDS],
    },
  };
  if (action.async) {
    // a function of its own per create, so each operation has a distinct method path
    create.operation.performResume = (z, bundle) => performResume(z, bundle);
  }
  return create;
};

const creates = snapshot.actions.filter((a) => !DEDICATED[a.name] && !SEARCHES[a.name])
  .map(makeCreate);

module.exports = {
  applyModel,
  compositionFrom,
  COMPOSITION_CREATE_OUTPUT_FIELDS,
  createKey,
  creates,
  COVERED,
  DEBUG,
  DEDICATED,
  makeCreate,
  META_OUTPUT_FIELDS,
  META_SAMPLE,
  performResume,
  SAMPLE_COMPOSITION,
  SEARCHES,
  startAsync,
  withId,
};
