'use strict';

// Search "Estimate Cost": what another action would cost and whether the balance covers
// it (the gateway action estimate-cost, free). A search rather than a create because it
// changes nothing: Zapier offers it as a lookup step ("Find ...") and in search-or-create
// flows, and never counts it as a task that did something.

const { baseUrl, fetchCatalogue, pickMeta } = require('../lib/common');
const { META_OUTPUT_FIELDS } = require('../creates/action');

const ACTION = 'estimate-cost';

// The actions to price, as a dropdown built from the live catalogue (titles as labels).
const actionField = async (z) => {
  const items = await fetchCatalogue(z);
  return [{
    key: 'action',
    label: 'Action',
    required: true,
    choices: items.filter((a) => a.name !== ACTION)
      .map((a) => ({ value: a.name, label: a.title || a.name, sample: a.name })),
    helpText: 'The action to price.',
  }];
};

const perform = async (z, bundle) => {
  const action = String((bundle.inputData && bundle.inputData.action) || '').trim();
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/${ACTION}`,
    method: 'POST',
    body: { action },
  });
  const data = response.data || {};
  return [{ id: data.action, ...data, meta: pickMeta(response.meta) }];
};

module.exports = {
  key: 'estimate_cost',
  noun: 'Cost Estimate',
  display: {
    label: 'Estimate Cost',
    description: 'Finds the price in credits of another action and whether your balance '
      + 'covers it. Free.',
  },
  operation: {
    inputFields: [actionField],
    perform,
    sample: {
      id: 'generate-product-listing',
      action: 'generate-product-listing',
      credits: 25,
      availableCredit: 975,
      affordable: true,
      meta: { creditsUsed: 0, availableCredit: 975, txnReceipt: null },
    },
    outputFields: [
      { key: 'action', label: 'Action' },
      { key: 'credits', label: 'Credits', type: 'integer' },
      { key: 'availableCredit', label: 'Credits Available', type: 'integer' },
      { key: 'affordable', label: 'Affordable', type: 'boolean' },
      ...META_OUTPUT_FIELDS.filter((f) => f.key !== 'meta__txnReceipt'),
    ],
  },
  ACTION,
};
