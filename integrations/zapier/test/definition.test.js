'use strict';

// The app definition itself (no gateway needed): both auth variants validate against
// Zapier's schema, ZAPIER_AUTH selects one, and the create list follows the snapshot.

const should = require('should');

const schemaTools = require('zapier-platform-core/src/tools/schema');

const { buildApp, authTypeFromEnv } = require('../lib/app');
const authentication = require('../lib/authentication');
const snapshot = require('../catalogue.snapshot.json');
const { createKey } = require('../creates/action');

describe('app definition', () => {
  ['oauth2', 'api_key'].forEach((authType) => {
    it(`validates against zapier-platform-schema (${authType})`, () => {
      const app = buildApp({ authType });
      schemaTools.validateApp(schemaTools.prepareApp(app)).should.eql([]);
    });
  });

  it('is OAuth2 by default and the API-key variant with ZAPIER_AUTH=api_key', () => {
    authTypeFromEnv({}).should.equal('oauth2');
    authTypeFromEnv({ ZAPIER_AUTH: 'api_key' }).should.equal('api_key');
    buildApp({ authType: 'oauth2' }).authentication.should.equal(authentication.oauth2);
    buildApp({ authType: 'api_key' }).authentication.should.equal(authentication.apiKey);
    (() => buildApp({ authType: 'basic' })).should.throw(/unknown auth type/);
  });

  it('asks for the gateway scopes, refreshes automatically and uses PKCE', () => {
    const cfg = authentication.oauth2.oauth2Config;
    cfg.scope.split(' ').sort().should.eql(
      ['account:read', 'actions:read', 'actions:run', 'credits:read', 'hooks:read', 'hooks:write']);
    cfg.autoRefresh.should.be.true();
    cfg.enablePkce.should.be.true();
    cfg.authorizeUrl.url.should.equal('{{process.env.GATEWAY_URL}}/oauth/authorize');
    authentication.apiKey.type.should.equal('custom');
    authentication.apiKey.fields.map((f) => f.key).should.eql(['api_key']);
  });

  it('has one create per snapshot action, async ones with performResume', () => {
    const app = buildApp();
    snapshot.actions.forEach((action) => {
      const create = app.creates[createKey(action.name)];
      should.exist(create, action.name);
      create.operation.inputFields[0].should.be.a.Function(); // built live
      if (action.async) {
        create.operation.performResume.should.be.a.Function();
      } else {
        should.not.exist(create.operation.performResume);
      }
    });
  });

  it('reads token responses bare or enveloped', () => {
    authentication.tokenFields({ access_token: 'a', refresh_token: 'r', expires_in: 3600 })
      .should.eql({ access_token: 'a', refresh_token: 'r', expires_in: 3600 });
    authentication.tokenFields({ success: true, data: { access_token: 'a' } })
      .should.eql({ access_token: 'a' });
  });
});
