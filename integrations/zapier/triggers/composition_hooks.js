'use strict';

// REST-hook triggers: composition.completed and composition.failed.
// Subscribe: POST /zapier/v1/hooks {target_url, event} -> {id}; unsubscribe:
// DELETE /zapier/v1/hooks/{id}. Deliveries are {type, timestamp, data: {composition}}.

const { baseUrl } = require('../lib/common');
const { listPosts } = require('./new_post');
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

// For the Zap editor's "test trigger": the gateway has no list of compositions, so the
// latest completed ones are found through their posts. Failed compositions leave no
// post; Zapier then shows the sample.
const listCompleted = async (z) => {
  const posts = await listPosts(z, { limit: 20 });
  const uids = [...new Set(posts.map((p) => p.compositionUid).filter(Boolean))].slice(0, 3);
  const items = [];
  for (const uid of uids) {
    const response = await z.request({
      url: `${baseUrl()}/zapier/v1/compositions/${encodeURIComponent(uid)}`,
      method: 'GET',
    });
    const composition = response.data.composition || response.data;
    items.push({ id: composition.uid, event: 'composition.completed', ...composition });
  }
  return items;
};

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
  { key: 'status', label: 'Status' },
  { key: 'action', label: 'Action' },
  { key: 'outputs[]url', label: 'Output URLs' },
  { key: 'txnReceipt', label: 'Receipt' },
  { key: 'refundReceipt', label: 'Refund Receipt' },
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
    sample: options.sample || {
      ...SAMPLE_COMPOSITION,
      event,
      ...(event === 'composition.failed'
        ? {
          status: 'failed', outputs: [], refundReceipt: 'txn_b8eafbce1ce956d2afe1985f',
          error: { code: 'IMAGE_FETCH_FAILED', message: 'the product image could not be fetched' },
        }
        : {}),
    },
    outputFields: options.outputFields || COMPOSITION_OUTPUT_FIELDS,
  },
});

module.exports = {
  completed: makeHook('composition.completed', 'composition_completed', 'Composition Completed',
    'Triggers when an asynchronous action (e.g. a product listing) completes.', listCompleted),
  failed: makeHook('composition.failed', 'composition_failed', 'Composition Failed',
    'Triggers when an asynchronous action fails (its credits are refunded).', async () => []),
  listCompositions,
  makeHook,
  toItem,
};
