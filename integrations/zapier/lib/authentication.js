'use strict';

// Two ways to connect; an app version has exactly one (ZAPIER_AUTH picks it, see index.js).

const { SCOPES, baseUrl } = require('./common');

// The auth test: GET /zapier/v1/me -> {id, username, balance, plan, credential, label}.
const test = async (z) => {
  const response = await z.request({ url: `${baseUrl()}/zapier/v1/me`, method: 'GET' });
  return response.data;
};

// bundle.inputData holds the test's result here.
const connectionLabel = (z, bundle) => bundle.inputData.username;

// The token endpoint answers RFC 6749 JSON; accept it inside the gateway envelope too.
const tokenFields = (data) => {
  const t = (data && data.access_token === undefined && data.data) ? data.data : (data || {});
  const out = { access_token: t.access_token };
  if (t.refresh_token) {
    out.refresh_token = t.refresh_token;
  }
  if (t.expires_in !== undefined) {
    out.expires_in = t.expires_in;
  }
  if (t.scope) {
    out.scope = t.scope;
  }
  return out;
};

const tokenRequest = async (z, form) => {
  const response = await z.request({
    url: `${baseUrl()}/oauth/token`,
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      ...form,
    },
    skipThrowForStatus: true,
  });
  const data = response.data || {};
  if (response.status >= 400 || (data && data.success === false)) {
    const code = (data.error && (data.error.code || data.error)) || `HTTP_${response.status}`;
    const message = data.error_description || (data.error && data.error.message)
      || `The token endpoint answered HTTP ${response.status}`;
    if (response.status === 429) {
      const retryAfter = parseInt(response.headers.get('retry-after'), 10);
      throw new z.errors.ThrottledError(`${code}: ${message}`,
        Number.isNaN(retryAfter) ? undefined : retryAfter);
    }
    // invalid_grant (400) is the only answer that means the connection is dead; Zapier
    // marks it so when refreshAccessToken throws. 5xx are passing faults.
    throw new z.errors.Error(String(message), String(code), response.status);
  }
  const tokens = tokenFields(data);
  if (!tokens.access_token) {
    throw new z.errors.Error('The token endpoint returned no access_token.', 'INVALID_TOKEN_RESPONSE', 502);
  }
  return tokens;
};

const getAccessToken = (z, bundle) => {
  const form = {
    grant_type: 'authorization_code',
    code: bundle.inputData.code,
    redirect_uri: bundle.inputData.redirect_uri,
  };
  if (bundle.inputData.code_verifier) { // PKCE (enablePkce)
    form.code_verifier = bundle.inputData.code_verifier;
  }
  return tokenRequest(z, form);
};

const refreshAccessToken = (z, bundle) => tokenRequest(z, {
  grant_type: 'refresh_token',
  refresh_token: bundle.authData.refresh_token,
});

const oauth2 = {
  type: 'oauth2',
  test,
  connectionLabel,
  oauth2Config: {
    authorizeUrl: {
      url: '{{process.env.GATEWAY_URL}}/oauth/authorize',
      params: {
        client_id: '{{process.env.CLIENT_ID}}',
        state: '{{bundle.inputData.state}}',
        redirect_uri: '{{bundle.inputData.redirect_uri}}',
        response_type: 'code',
      },
    },
    getAccessToken,
    refreshAccessToken,
    scope: SCOPES,
    autoRefresh: true,
    enablePkce: true,
  },
  fields: [],
};

const apiKey = {
  type: 'custom',
  test,
  connectionLabel,
  fields: [{
    key: 'api_key',
    label: 'API Key',
    type: 'password',
    required: true,
    helpText: 'An API key of your gateway account (gwk_...), created with POST /api/key/generate.',
  }],
};

module.exports = { apiKey, getAccessToken, oauth2, refreshAccessToken, test, tokenFields };
