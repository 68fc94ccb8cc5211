'use strict';

// Test helpers: the live gateway's settings, app testers for both auth types, a loopback
// receiver for callbacks and REST hooks, and a runner that hands z.generateCallbackUrl a
// URL of our choosing.

const http = require('http');

const zapier = require('zapier-platform-core');
const resolveMethodPath = require('zapier-platform-core/src/tools/resolve-method-path');

const { buildApp } = require('../lib/app');
const { clearCatalogueCache } = require('../lib/common');

const env = {
  url: (process.env.GATEWAY_URL || '').replace(/\/+$/, ''),
  apiKey: process.env.GATEWAY_API_KEY,
  imageUrl: process.env.GATEWAY_IMAGE_URL,
  limitedKey: process.env.GATEWAY_LIMITED_API_KEY,
  oauthClientId: process.env.GATEWAY_OAUTH_CLIENT_ID,
  oauthClientSecret: process.env.GATEWAY_OAUTH_CLIENT_SECRET,
  oauthCode: process.env.GATEWAY_OAUTH_CODE,
  oauthRedirectUri: process.env.GATEWAY_OAUTH_REDIRECT_URI,
  oauthCodeVerifier: process.env.GATEWAY_OAUTH_CODE_VERIFIER,
  oauthRefreshToken: process.env.GATEWAY_OAUTH_REFRESH_TOKEN,
};

const LOOPBACK = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//;

// Every test talks to the live gateway named by GATEWAY_URL: a loopback one, always.
const requireLiveGateway = (ctx) => {
  if (!env.url || !env.apiKey) {
    console.log('    (skipped: GATEWAY_URL and GATEWAY_API_KEY are not set; '
      + 'run through tests/test_zapier_app.py or export them)');
    ctx.skip();
  }
  if (!LOOPBACK.test(`${env.url}/`)) {
    throw new Error(`GATEWAY_URL must be a loopback address in tests, not ${env.url}`);
  }
};

const apps = {
  oauth2: buildApp({ authType: 'oauth2' }),
  api_key: buildApp({ authType: 'api_key' }),
};

const testers = {
  oauth2: zapier.createAppTester(apps.oauth2),
  api_key: zapier.createAppTester(apps.api_key),
};

const apiKeyBundle = (extra = {}, key = env.apiKey) => ({
  authData: { api_key: key },
  inputData: {},
  ...extra,
});

// zapier-platform-core's appTester always hands z.generateCallbackUrl() a fixed
// zapier-staging.com URL (create-app-tester.js); the platform really passes it as the
// event's `callback_url`. This runner does the same with a loopback URL of ours, so
// the gateway's callback lands in the test and never leaves the machine.
const runWithCallback = async (app, method, bundle, callbackUrl) => {
  if (!LOOPBACK.test(callbackUrl)) {
    throw new Error(`callback URLs in tests must be loopback, not ${callbackUrl}`);
  }
  const handler = zapier.createAppHandler(app);
  const event = {
    command: 'execute',
    method: typeof method === 'string' ? method : resolveMethodPath(app, method),
    bundle,
    callback_url: callbackUrl,
  };
  const response = await handler(event);
  return { results: response.results, status: response.status };
};

// A loopback HTTP server recording every POST (callbacks and hook deliveries).
const startReceiver = () => new Promise((resolve) => {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try {
        body = JSON.parse(raw);
      } catch (_e) {
        body = raw;
      }
      received.push({ path: req.url, headers: req.headers, body });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{}');
      waiters.slice().forEach((w) => w());
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const base = `http://127.0.0.1:${server.address().port}`;
    const waitFor = (predicate, timeoutMs = 20000) => new Promise((ok, fail) => {
      const check = () => {
        const hit = received.find(predicate);
        if (hit) {
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          ok(hit);
        }
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        fail(new Error(`nothing matching arrived within ${timeoutMs} ms; got ${JSON.stringify(received.map((r) => r.path))}`));
      }, timeoutMs);
      waiters.push(check);
      check();
    });
    resolve({
      base, received, waitFor, close: () => new Promise((ok) => server.close(ok)),
    });
  });
});

// Zapier's AppError carries a JSON message {message, code, status}.
const parseAppError = (err) => {
  try {
    return JSON.parse(err.message);
  } catch (_e) {
    return { message: err.message };
  }
};

module.exports = {
  apiKeyBundle,
  apps,
  clearCatalogueCache,
  env,
  parseAppError,
  requireLiveGateway,
  runWithCallback,
  startReceiver,
  testers,
};
