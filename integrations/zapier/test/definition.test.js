'use strict';

// The app definition itself (no gateway needed): both auth variants validate against
// Zapier's schema, ZAPIER_AUTH selects one, and the create list follows the snapshot.

const should = require('should');

const schemaTools = require('zapier-platform-core/src/tools/schema');

const { buildApp, authTypeFromEnv } = require('../lib/app');
const authentication = require('../lib/authentication');
const zapier = require('zapier-platform-core');

const snapshot = require('../catalogue.snapshot.json');
const { createKey, DEDICATED } = require('../creates/action');
const runProject = require('../creates/run_project');

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
      ['account:read', 'actions:read', 'actions:run', 'content:read', 'content:write', 'credits:read', 'hooks:read', 'hooks:write']);
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
      if (!DEDICATED[action.name]) {
        create.operation.inputFields[0].should.be.a.Function(); // built live
      }
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

describe('project runs (definition)', () => {
  const app = buildApp({ authType: 'api_key' });
  const appTester = zapier.createAppTester(app);
  const create = app.creates.run_project;
  const fieldOf = (key) => create.operation.inputFields.find((f) => f.key === key);

  it('has a Run Project create for the run-project action, not a generic one', () => {
    snapshot.actions.map((a) => a.name).should.containEql('run-project');
    createKey('run-project').should.equal('run_project');
    should.not.exist(app.creates.run_run_project);
    create.display.label.should.equal('Run Project');
    create.operation.perform.should.be.a.Function();
    create.operation.performResume.should.be.a.Function();
    create.operation.sample.action.should.equal('run-project');
  });

  it('picks the project from a dynamic dropdown fed by the hidden project_list trigger', () => {
    const project = fieldOf('project_id');
    project.should.have.properties({ required: true, altersDynamicFields: true });
    project.dynamic.should.equal('project_list.id.name');
    const [triggerKey, idKey, labelKey] = project.dynamic.split('.');
    const trigger = app.triggers[triggerKey];
    trigger.display.hidden.should.be.true();
    trigger.operation.type.should.equal('polling');
    trigger.operation.sample.should.have.properties(idKey, labelKey);
    create.operation.inputFields.indexOf(project).should.equal(0);
    create.operation.inputFields[1].should.be.a.Function(); // the project's variables
  });

  it('has an optional integer seed and a use_cache boolean defaulting to true', () => {
    fieldOf('seed').should.have.properties({ type: 'integer', required: false });
    fieldOf('use_cache').should.have.properties({ type: 'boolean', required: false, default: 'true' });
  });

  it('shows no variable fields (and asks nothing) until a project is chosen', async () => {
    const fields = await appTester(create.operation.inputFields,
      { authData: { api_key: 'gwk_unused' }, inputData: {} });
    fields.map((f) => f.key).should.eql(['project_id', 'seed', 'use_cache']);
  });

  it('maps project variables to fields keyed var__<name>', () => {
    const { toZapierField } = require('../lib/fields');
    const field = (v) => toZapierField(runProject.asGatewayField(v));
    field({ name: 'subject', type: 'text', default: 'cat', help: 'What to draw', required: true })
      .should.eql({
        key: 'var__subject', label: 'subject', required: true, type: 'string',
        helpText: 'What to draw', default: 'cat',
      });
    field({ name: 'size', type: 'number', default: 64, help: '', required: false })
      .should.eql({ key: 'var__size', label: 'size', required: false, type: 'number', default: '64' });
    const image = field({ name: 'photo', type: 'image', help: 'The product', required: false });
    image.should.have.properties({ key: 'var__photo', type: 'string' });
    image.helpText.should.match(/image URL/);
  });

  it('sends only declared variables, typed, and leaves empty ones to their defaults', () => {
    const variables = [
      { name: 'subject', type: 'text' }, { name: 'size', type: 'number' },
      { name: 'photo', type: 'image' }];
    runProject.variableValues(variables, {
      var__subject: 'teapot', var__size: '48', var__photo: '', var__gone: 'x', seed: '3',
    }).should.eql({ subject: 'teapot', size: 48 });
  });

  it('has a Project Run Finished REST hook on run.completed with a polling fallback', async () => {
    const trigger = app.triggers.project_run_finished;
    trigger.display.label.should.equal('Project Run Finished');
    const op = trigger.operation;
    op.type.should.equal('hook');
    ['performSubscribe', 'performUnsubscribe', 'perform', 'performList'].forEach((m) => {
      (typeof op[m]).should.equal('function', m);
    });
    op.sample.event.should.equal('run.completed');
    const composition = { uid: 'comp_0123', action: 'run-project', status: 'completed', outputs: [] };
    const items = await appTester(op.perform, {
      authData: {},
      cleanedRequest: { type: 'run.completed', timestamp: 'now', data: { composition } },
    });
    items.should.eql([{ id: 'comp_0123', event: 'run.completed', ...composition }]);
  });
});

describe('content library (definition)', () => {
  const app = buildApp({ authType: 'api_key' });
  const uploadFile = require('../creates/upload_file');

  it('has an Upload File create for the upload action, not a generic one', () => {
    snapshot.actions.map((a) => a.name).should.containEql('upload');
    createKey('upload').should.equal('upload_file');
    should.not.exist(app.creates.run_upload);
    const create = app.creates.upload_file;
    create.display.label.should.equal('Upload File');
    const file = create.operation.inputFields.find((f) => f.key === 'file');
    file.should.have.properties({ type: 'file', required: true });
    should.not.exist(create.operation.performResume);
    create.operation.sample.id.should.equal(create.operation.sample.contentId);
  });

  it('sends the file (a URL) as file_url with only the filled-in fields', () => {
    uploadFile.bodyFor({ file: 'https://files.example/a.png', description: '', tags: 'a,b' })
      .should.eql({ file_url: 'https://files.example/a.png', tags: 'a,b' });
    uploadFile.bodyFor({ file: 'https://files.example/a.png', tags: ['a', 'b'], content_id: 'cnt_1' })
      .should.eql({ file_url: 'https://files.example/a.png', tags: 'a,b', content_id: 'cnt_1' });
  });

  it('has a New Content polling trigger keyed by contentId', () => {
    const trigger = app.triggers.new_content;
    trigger.display.label.should.equal('New Content');
    trigger.operation.type.should.equal('polling');
    trigger.operation.sample.id.should.equal(trigger.operation.sample.contentId);
    trigger.operation.inputFields.map((f) => f.key).should.eql(['type', 'source', 'tag']);
  });
});
