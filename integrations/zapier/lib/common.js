'use strict';

// Shared plumbing: the gateway's base URL, the envelope middleware, the action catalogue.

const VERSION = require('../package.json').version;

// Where the gateway lives. On Zapier it is an environment variable of the app version
// (`zapier env:set <version> GATEWAY_URL=https://...`); in tests it comes from the shell.
const baseUrl = () => (process.env.GATEWAY_URL || '').replace(/\/+$/, '');

const SCOPES = 'account:read actions:run actions:read content:read content:write credits:read hooks:read hooks:write';

// Requests to the OAuth endpoints carry client credentials, never a bearer token.
const isOAuthEndpoint = (url) => /\/oauth\/(token|revoke|authorize)(\?|$)/.test(url || '');

// beforeRequest: the credential of the connection, sent as `Authorization: Bearer`.
const addAuthHeader = (authType) => (request, z, bundle) => {
  request.headers = request.headers || {};
  request.headers.Accept = request.headers.Accept || 'application/json';
  request.headers['User-Agent'] = `metered-gateway-zapier/${VERSION}`;
  if (request.headers.Authorization || isOAuthEndpoint(request.url)) {
    return request;
  }
  const authData = (bundle && bundle.authData) || {};
  const token = authType === 'api_key' ? authData.api_key : authData.access_token;
  if (token) {
    request.headers.Authorization = `Bearer ${token}`;
  }
  return request;
};

const describeError = (error, status) => {
  let message = error.message || `The gateway answered HTTP ${status}`;
  if (Array.isArray(error.details) && error.details.length) {
    const parts = error.details.map((d) =>
      d && typeof d === 'object' ? [d.field, d.problem].filter(Boolean).join(': ') : String(d));
    message += ` (${parts.join('; ')})`;
  }
  return message;
};

// afterResponse: unwrap `{success, data, meta}`; turn `success: false` (or any 4xx/5xx)
// into Zapier errors. A request made with `skipThrowForStatus: true` gets the response
// back untouched so its caller can handle the status itself (e.g. a search's 404).
const handleEnvelope = (authType) => (response, z) => {
  const body = response.data;
  const isEnvelope = body !== null && typeof body === 'object' && !Array.isArray(body)
    && typeof body.success === 'boolean';
  const failed = response.status >= 400 || (isEnvelope && body.success === false);

  if (failed) {
    if (response.skipThrowForStatus) {
      return response;
    }
    const status = response.status;
    let code;
    let message;
    if (isEnvelope && body.error && typeof body.error === 'object') {
      code = body.error.code;
      message = describeError(body.error, status);
    } else if (body && typeof body.error === 'string') { // an RFC 6749 error (token endpoint)
      code = body.error;
      message = body.error_description || body.error;
    } else {
      code = `HTTP_${status}`;
      message = `The gateway answered HTTP ${status}`;
    }
    code = code || `HTTP_${status}`;
    const tokenEndpoint = isOAuthEndpoint(response.request && response.request.url);
    if (status === 401 && authType === 'oauth2' && !tokenEndpoint) {
      // Zapier refreshes the access token and retries (autoRefresh).
      throw new z.errors.RefreshAuthError(`${code}: ${message}`);
    }
    if (status === 429) {
      const retryAfter = parseInt(response.headers.get('retry-after'), 10);
      throw new z.errors.ThrottledError(`${code}: ${message}`,
        Number.isNaN(retryAfter) ? undefined : retryAfter);
    }
    throw new z.errors.Error(message, code, status);
  }

  if (isEnvelope) {
    response.envelope = body;
    response.meta = body.meta || {};
    response.data = body.data;
    response.json = body.data;
  }
  return response;
};

// The gateway's money/trace metadata worth keeping in a Zap's output.
const pickMeta = (meta) => {
  const out = {};
  ['requestId', 'action', 'creditsUsed', 'availableCredit', 'txnReceipt', 'ttl'].forEach((k) => {
    if (meta && meta[k] !== undefined) {
      out[k] = meta[k];
    }
  });
  return out;
};

// GET /zapier/v1/actions, memoised briefly (a warm Lambda reuses module state) so that
// building a form and running the step do not both cost a request each time.
const CATALOGUE_TTL_MS = 60 * 1000;
const catalogueCache = new Map();

const fetchCatalogue = async (z) => {
  const key = baseUrl();
  const hit = catalogueCache.get(key);
  if (hit && Date.now() - hit.at < CATALOGUE_TTL_MS) {
    return hit.items;
  }
  const response = await z.request({ url: `${key}/zapier/v1/actions`, method: 'GET' });
  const items = (response.data && response.data.items) || [];
  catalogueCache.set(key, { at: Date.now(), items });
  return items;
};

// GET /getModels (the generation models and their limits, in the operator's order; the
// first is the default), memoised like the catalogue: a form asks for it on each reload.
const modelsCache = new Map();

const fetchModels = async (z) => {
  const key = baseUrl();
  const hit = modelsCache.get(key);
  if (hit && Date.now() - hit.at < CATALOGUE_TTL_MS) {
    return hit.items;
  }
  const response = await z.request({ url: `${key}/getModels`, method: 'GET' });
  const items = Array.isArray(response.data) ? response.data : [];
  modelsCache.set(key, { at: Date.now(), items });
  return items;
};

const clearCatalogueCache = () => {
  catalogueCache.clear();
  modelsCache.clear();
};

const findAction = async (z, name) => {
  const items = await fetchCatalogue(z);
  return items.find((a) => a.name === name);
};

module.exports = {
  SCOPES,
  addAuthHeader,
  baseUrl,
  clearCatalogueCache,
  fetchCatalogue,
  fetchModels,
  findAction,
  handleEnvelope,
  isOAuthEndpoint,
  pickMeta,
};
