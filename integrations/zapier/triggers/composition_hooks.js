'use strict';

// REST-hook triggers: composition.completed and composition.failed.
// Subscribe: POST /zapier/v1/hooks {target_url, event} -> {id}; unsubscribe:
// DELETE /zapier/v1/hooks/{id}. Deliveries are {type, timestamp, data: {composition}}.

const { baseUrl } = require('../lib/common');
const { SAMPLE_COMPOSITION } = require('../creates/action');

const toItem = (payload) => {
  const body = payload || {};
  const composition = (body.data && body.data.composition) || body.composition || body;
  return { id: composition.uid, event: body.type, ...composition };
};

const subscribe = (event) => async (z, bundle) => {
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/hooks`,
    method: 'POST',
    body: { target_url: bundle.targetUrl, event },
  });
  // Stored by Zapier as bundle.subscribeData. The account's signing secret (sent with
  // its first hook only) is not kept: Zapier does not verify signatures here.
  const { secret, ...hook } = response.data; // eslint-disable-line no-unused-vars
  return hook;
};

const unsubscribe = async (z, bundle) => {
  const hookId = bundle.subscribeData && bundle.subscribeData.id;
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/hooks/${encodeURIComponent(hookId)}`,
    method: 'DELETE',
  });
  return response.data;
};

const perform = (z, bundle) => [toItem(bundle.cleanedRequest)];

// GET /zapier/v1/compositions (newest first; `status` and `action` filters) as trigger
// items, labelled with the event they stand in for.
const listCompositions = async (z, event, params) => {
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/compositions`,
    method: 'GET',
    params: { limit: 50, ...params },
  });
  const items = (response.data && response.data.items) || [];
  return items.map((c) => ({ ...c, id: c.id || c.uid, event }));
};

const COMPOSITION_OUTPUT_FIELDS = [
  { key: 'id', label: 'Composition UID' },
  { key: 'event', label: 'Event' },
  { key: 'status', label: 'Status' },
  { key: 'action', label: 'Action' },
  { key: 'outputs[]url', label: 'Output URLs' },
  { key: 'txnReceipt', label: 'Receipt' },
  { key: 'creditsUsed', label: 'Credits Used', type: 'integer' },
  { key: 'refundReceipt', label: 'Refund Receipt' },
  { key: 'finishedAt', label: 'Finished At', type: 'datetime' },
];

// A failed composition exactly as GET /zapier/v1/compositions?status=failed lists one
// (and the composition.failed delivery carries it): the debit's receipt, the refund that
// undid it, the error's code and message, no outputs. The live tests compare its keys with
// a real failed listing's.
const SAMPLE_FAILED = {
  ...SAMPLE_COMPOSITION,
  uid: 'comp_5a1e0c33b8d94e0f9a7c',
  id: 'comp_5a1e0c33b8d94e0f9a7c',
  status: 'failed',
  progress: 5,
  outputs: [],
  error: {
    code: 'INVALID_REQUEST',
    message: 'product_image_url: https://shop.example/missing.png answered HTTP 404',
  },
  refundReceipt: 'txn_b8eafbce1ce956d2afe1985f',
  finishedAt: '2025-01-14T10:30:01.000Z',
  links: {
    status: 'https://gateway.example/zapier/v1/compositions/comp_5a1e0c33b8d94e0f9a7c',
    events: 'https://gateway.example/zapier/v1/compositions/comp_5a1e0c33b8d94e0f9a7c/events',
    cancel: 'https://gateway.example/zapier/v1/compositions/comp_5a1e0c33b8d94e0f9a7c/cancel',
  },
  event: 'composition.failed',
};

const FAILED_OUTPUT_FIELDS = [
  { key: 'id', label: 'Composition UID' },
  { key: 'event', label: 'Event' },
  { key: 'status', label: 'Status' },
  { key: 'action', label: 'Action' },
  { key: 'error__code', label: 'Error Code' },
  { key: 'error__message', label: 'Error Message' },
  { key: 'txnReceipt', label: 'Receipt' },
  { key: 'refundReceipt', label: 'Refund Receipt' },
  { key: 'creditsUsed', label: 'Credits Refunded', type: 'integer' },
  { key: 'finishedAt', label: 'Failed At', type: 'datetime' },
];

// A REST-hook trigger on one gateway event whose deliveries carry a composition.
// `options` may set the noun, sample and output fields (defaults: a composition's).
const makeHook = (event, key, label, description, performList, options = {}) => ({
  key,
  noun: options.noun || 'Composition',
  display: { label, description },
  operation: {
    type: 'hook',
    performSubscribe: subscribe(event),
    performUnsubscribe: (z, bundle) => unsubscribe(z, bundle),
    perform: (z, bundle) => perform(z, bundle),
    performList,
    sample: options.sample || { ...SAMPLE_COMPOSITION, event },
    outputFields: options.outputFields || COMPOSITION_OUTPUT_FIELDS,
  },
});

// performList (the Zap editor's "test trigger", and Zapier's polling fallback): the
// latest compositions in the state the event announces, newest first.
module.exports = {
  completed: makeHook('composition.completed', 'composition_completed', 'Composition Completed',
    'Triggers when an asynchronous action (e.g. a product listing) completes.',
    (z) => listCompositions(z, 'composition.completed', { status: 'completed' })),
  failed: makeHook('composition.failed', 'composition_failed', 'Composition Failed',
    'Triggers when an asynchronous action fails (its credits are refunded).',
    (z) => listCompositions(z, 'composition.failed', { status: 'failed' }),
    { sample: SAMPLE_FAILED, outputFields: FAILED_OUTPUT_FIELDS }),
  listCompositions,
  makeHook,
  SAMPLE_FAILED,
  toItem,
};
