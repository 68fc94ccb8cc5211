'use strict';

// One create per gateway action. Which creates exist is fixed at load time from
// catalogue.snapshot.json (a Zapier app version has a static list of operations);
// each create's input fields are built live from GET /zapier/v1/actions.

const { baseUrl, fetchCatalogue, findAction, pickMeta } = require('../lib/common');
const { buildBody, toZapierField } = require('../lib/fields');
const snapshot = require('../catalogue.snapshot.json');

// Actions with a create of their own (a richer form than the catalogue's fields can
// describe): the generic create is not built for them, and their create's key is this.
const DEDICATED = {
  'run-project': 'run_project', // creates/run_project.js
  upload: 'upload_file', // creates/upload_file.js
};

// Zapier keys: letters first, then letters, digits and underscores.
const createKey = (name) => DEDICATED[name] || `run_${name.replace(/[^A-Za-z0-9]+/g, '_')}`;

// The longest a synchronous POST waits when no callback URL is available (Zapier gives
// a step about 30 seconds).
const FALLBACK_WAIT_S = 20;

const inputFieldsFor = (name) => async (z) => {
  const action = await findAction(z, name);
  if (!action) {
    throw new z.errors.Error(
      `The gateway no longer offers the action "${name}".`, 'INVALID_ACTION', 404);
  }
  const fields = (action.inputFields || []).map(toZapierField);
  if (name === 'estimate-cost') { // a dropdown of the actions to price
    const items = await fetchCatalogue(z);
    fields.forEach((f) => {
      if (f.key === 'action' && !f.choices) {
        f.choices = items.map((a) => ({ value: a.name, label: a.title || a.name, sample: a.name }));
      }
    });
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

const SAMPLE_COMPOSITION = {
  id: 'comp_79bf7c0b0b04080e8ce8',
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
  createdAt: '2025-01-14T10:30:00.000Z',
  finishedAt: '2025-01-14T10:30:04.000Z',
};

const SAMPLES = {
  echo: { message: 'hello', length: 5, uppercase: null, meta: { creditsUsed: 1, availableCredit: 99, txnReceipt: 'txn_0123456789abcdef01234567' } },
  'estimate-cost': { action: 'generate-product-listing', credits: 25, availableCredit: 99, affordable: true, meta: {} },
};

const makeCreate = (action) => {
  const create = {
    key: createKey(action.name),
    noun: action.title || action.name,
    display: {
      label: action.title || action.name,
      description: (action.description || `Runs the gateway action ${action.name}.`).slice(0, 1000),
    },
    operation: {
      inputFields: [inputFieldsFor(action.name)],
      perform: action.async ? asyncPerform(action.name) : syncPerform(action.name),
      sample: action.async
        ? { ...SAMPLE_COMPOSITION, action: action.name }
        : (SAMPLES[action.name] || { meta: {} }),
    },
  };
  if (action.async) {
    // a function of its own per create, so each operation has a distinct method path
    create.operation.performResume = (z, bundle) => performResume(z, bundle);
  }
  return create;
};

const creates = snapshot.actions.filter((a) => !DEDICATED[a.name]).map(makeCreate);

module.exports = {
  compositionFrom,
  createKey,
  creates,
  DEDICATED,
  makeCreate,
  performResume,
  SAMPLE_COMPOSITION,
  startAsync,
  withId,
};
