'use strict';

// Search: a ledger entry by its receipt id (GET /zapier/v1/receipts/{txnReceipt}).
// NOT_FOUND (a typo, or another account's receipt) is an empty result, not an error.

const { baseUrl } = require('../lib/common');

const perform = async (z, bundle) => {
  const receipt = String((bundle.inputData && bundle.inputData.txnReceipt) || '').trim();
  if (!receipt) {
    return [];
  }
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/receipts/${encodeURIComponent(receipt)}`,
    method: 'GET',
    skipThrowForStatus: true,
  });
  const body = response.data || {};
  if (response.status === 404) {
    return [];
  }
  if (response.status >= 400 || body.success === false) {
    // Handled like any other failure (rate limit, auth, ...): rethrow through the middleware
    // by asking again without skipThrowForStatus would cost a request; build the error here.
    const err = body.error || {};
    if (response.status === 429) {
      const retryAfter = parseInt(response.headers.get('retry-after'), 10);
      throw new z.errors.ThrottledError(err.message || 'rate limited',
        Number.isNaN(retryAfter) ? undefined : retryAfter);
    }
    if (response.status === 401 && bundle.authData && bundle.authData.access_token) {
      throw new z.errors.RefreshAuthError(err.message || 'unauthorized');
    }
    throw new z.errors.Error(err.message || `HTTP ${response.status}`,
      err.code || `HTTP_${response.status}`, response.status);
  }
  const item = body.success === true ? body.data : body;
  return item ? [item] : [];
};

module.exports = {
  key: 'find_receipt',
  noun: 'Receipt',
  display: {
    label: 'Find Receipt',
    description: 'Finds a credit ledger entry (debit, refund, grant...) by its receipt ID.',
  },
  operation: {
    inputFields: [{
      key: 'txnReceipt', label: 'Receipt', required: true,
      helpText: 'A receipt id such as txn_0123..., from an action\'s meta.txnReceipt.',
    }],
    perform,
    sample: {
      id: 'txn_a8eafbce1ce956d2afe1985f',
      txnReceipt: 'txn_a8eafbce1ce956d2afe1985f',
      type: 'debit',
      amount: -25,
      balanceAfter: 975,
      action: 'generate-product-listing',
      reason: null,
      refundOf: null,
      requestId: 'req_ac301ea4e0d64d7a1995142f',
      createdAt: '2025-01-14T10:30:00.000Z',
    },
    outputFields: [
      { key: 'id', label: 'Receipt' },
      { key: 'type', label: 'Type' },
      { key: 'amount', label: 'Amount', type: 'integer' },
      { key: 'balanceAfter', label: 'Balance After', type: 'integer' },
      { key: 'action', label: 'Action' },
      { key: 'reason', label: 'Reason' },
      { key: 'refundOf', label: 'Refund Of' },
      { key: 'createdAt', label: 'Created At', type: 'datetime' },
    ],
  },
};
