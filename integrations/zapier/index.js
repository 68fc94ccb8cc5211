'use strict';

// The Zapier app. ZAPIER_AUTH=api_key builds the API-key variant; anything else OAuth2.
// Set the same ZAPIER_AUTH locally when pushing and in the version's environment
// (`zapier env:set`), so the pushed definition and the running code agree.

const { buildApp, authTypeFromEnv } = require('./lib/app');

module.exports = buildApp({ authType: authTypeFromEnv() });
