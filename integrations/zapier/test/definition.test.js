'use strict';

// The app definition itself (no gateway needed): both auth variants validate against
// Zapier's schema, ZAPIER_AUTH selects one, and the create list follows the snapshot.

const should = require('should');

const schemaTools = require('zapier-platform-core/src/tools/schema');

const { buildApp, authTypeFromEnv } = require('../lib/app');
const authentication = require('../lib/authentication');
const zapier = require('zapier-platform-core');

const snapshot = require('../catalogue.snapshot.json');
const {
  applyModel, COVERED, createKey, DEBUG, DEDICATED, SEARCHES,
} = require('../creates/action');
const {
  ALWAYS_REFUSED, buildBody, offered, titleCase, toZapierField,
} = require('../lib/fields');
const hooks = require('../triggers/composition_hooks');
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
    snapshot.actions.filter((a) => !SEARCHES[a.name]).forEach((action) => {
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
        key: 'var__subject', label: 'Subject', required: true, type: 'string',
        helpText: 'What to draw', default: 'cat',
      });
    field({ name: 'size', type: 'number', default: 64, help: '', required: false })
      .should.eql({ key: 'var__size', label: 'Size', required: false, type: 'number', default: '64' });
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

// What a Zapier reviewer checks, over every operation of both auth variants.
describe('review rules (definition)', () => {
  const variants = ['oauth2', 'api_key'].map((authType) => buildApp({ authType }));
  const app = variants[0];
  const operations = (a) => ['triggers', 'creates', 'searches'].flatMap((kind) =>
    Object.values(a[kind]).map((op) => ({ kind, op })));

  it('declares a sample and output fields for every trigger, create and search', () => {
    variants.forEach((a) => operations(a).forEach(({ kind, op }) => {
      const where = `${kind}.${op.key}`;
      should.exist(op.operation.sample, where);
      Object.keys(op.operation.sample).length.should.be.above(0, where);
      op.operation.outputFields.should.be.an.Array();
      op.operation.outputFields.length.should.be.above(0, where);
      op.operation.outputFields.forEach((f) => {
        f.label.should.equal(titleCase(f.label), `${where} output ${f.key}`);
        // every declared output is one the sample has (a__b is a.b, a[]b is a[i].b)
        const top = f.key.split(/__|\[\]/)[0];
        op.operation.sample.should.have.property(top);
      });
    }));
  });

  it('labels operations and static fields in Title Case', () => {
    operations(app).forEach(({ kind, op }) => {
      op.display.label.should.equal(titleCase(op.display.label), `${kind}.${op.key}`);
      (op.operation.inputFields || []).filter((f) => typeof f === 'object').forEach((f) => {
        f.label.should.equal(titleCase(f.label), `${kind}.${op.key} ${f.key}`);
      });
    });
    ['Echo (Asynchronous)', 'Generate Product Listing', 'Generate Image'].forEach((label) => {
      Object.values(app.creates).map((c) => c.display.label).should.containEql(label);
    });
    titleCase('CFG scale').should.equal('CFG Scale');
    titleCase('Size of the output').should.equal('Size of the Output');
  });

  it('hides the debug actions, the covered ones and the dropdown triggers, and nothing else', () => {
    const hidden = operations(app).filter(({ op }) => op.display.hidden).map(({ op }) => op.key).sort();
    hidden.should.eql(['content_list', 'model_list', 'project_list', 'run_echo', 'run_echo_async',
      'run_health', 'run_list_posts']);
    [...DEBUG].map(createKey).sort().should.eql(['run_echo', 'run_echo_async']);
    [...COVERED].map(createKey).sort().should.eql(['run_health', 'run_list_posts']);
  });

  it('fills callback_url itself and never shows it', () => {
    const fields = [{ key: 'callback_url', type: 'string' }, { key: 'client_reference_id', type: 'string' }];
    offered(fields).map((f) => f.key).should.eql(['client_reference_id']);
    buildBody(fields, { callback_url: 'https://x.test/cb', client_reference_id: 'r1' })
      .should.eql({ client_reference_id: 'r1' });
  });

  it('offers Estimate Cost as a search, not a create', () => {
    should.not.exist(app.creates.run_estimate_cost);
    const search = app.searches.estimate_cost;
    search.display.label.should.equal('Estimate Cost');
    search.operation.inputFields[0].should.be.a.Function(); // the action dropdown, live
    search.operation.sample.should.have.properties({ action: 'generate-product-listing', affordable: true });
  });

  it('never shows or sends the fields the gateway always refuses', () => {
    ALWAYS_REFUSED.should.containDeep(new Set(['restoreFaces', 'input', 'controlNetPreset']));
    const video = snapshot.actions.find((a) => a.name === 'generate-video');
    video.inputFields.map((f) => f.key).should.containEql('controlNetPreset'); // the gateway lists it
    const body = buildBody(video.inputFields, {
      prompt: 'a boat', restoreFaces: 'true', input: 'x', controlNetPreset: 'canny', frames: '4',
    });
    body.should.eql({ prompt: 'a boat', frames: 4 });
  });

  it('sizes and samplers follow the chosen model (GET /getModels); Model is a dropdown', () => {
    const image = snapshot.actions.find((a) => a.name === 'generate-image');
    const models = [
      { modelID: 'sd', name: 'SD 1.5', allowedWidths: [512, 768], allowedHeights: [512], defaultResolution: [512, 512],
        allowedSamplers: ['Euler a', 'DDIM'], defaultSampler: 'DDIM', minSteps: 1, maxSteps: 50, defaultSteps: 20 },
      { modelID: 'xl', name: 'SDXL', allowedWidths: [1024], allowedHeights: [1024, 1216], defaultResolution: [1024, 1024],
        allowedSamplers: ['Euler'], defaultSampler: 'Euler', minSteps: 10, maxSteps: 60, defaultSteps: 30 },
    ];
    const form = (chosen) => applyModel(image.inputFields.map(toZapierField), models, chosen);
    const byKey = (fields) => Object.fromEntries(fields.map((f) => [f.key, f]));
    const first = byKey(form(undefined)); // nothing chosen: the default model, the first
    first.modelName.should.have.properties({ dynamic: 'model_list.id.name', altersDynamicFields: true });
    should.not.exist(first.modelName.choices);
    first.width.choices.map((c) => c.value).should.eql(['512', '768']);
    first.sampler.choices.map((c) => c.value).should.eql(['Euler a', 'DDIM']);
    first.sampler.default.should.equal('DDIM');
    const xl = byKey(form('xl'));
    xl.width.choices.map((c) => c.value).should.eql(['1024']);
    xl.height.choices.map((c) => c.value).should.eql(['1024', '1216']);
    xl.sampler.choices.map((c) => c.value).should.eql(['Euler']);
    xl.steps.helpText.should.match(/10-60 for SDXL/);
    const [trigger, idKey, labelKey] = first.modelName.dynamic.split('.');
    app.triggers[trigger].display.hidden.should.be.true();
    app.triggers[trigger].operation.sample.should.have.properties(idKey, labelKey);
  });

  it('content ids are dropdowns of the library, fed by the hidden content_list trigger', () => {
    const newVersion = app.creates.upload_file.operation.inputFields.find((f) => f.key === 'content_id');
    newVersion.dynamic.should.equal('content_list.id.label');
    const [trigger, idKey, labelKey] = newVersion.dynamic.split('.');
    const op = app.triggers[trigger].operation;
    op.canPaginate.should.be.true();
    op.sample.should.have.properties(idKey, labelKey);
    op.sample.label.should.match(/^product\.png \(image, 2025-01-14\)$/);
    app.triggers.project_list.operation.canPaginate.should.be.true();
  });

  it('the failed-composition trigger lists failed compositions and has a failed sample', () => {
    const op = app.triggers.composition_failed.operation;
    op.performList.should.be.a.Function();
    op.sample.should.equal(hooks.SAMPLE_FAILED);
    op.sample.should.have.properties({ status: 'failed', event: 'composition.failed' });
    op.sample.error.should.have.properties('code', 'message');
    op.sample.refundReceipt.should.match(/^txn_/);
    op.sample.outputs.should.eql([]);
  });

  it('asks for Node.js 22 or newer, as the current platform does', () => {
    const pkg = require('../package.json');
    pkg.engines.node.should.equal('>=22');
    pkg.dependencies['zapier-platform-core'].should.equal(pkg.devDependencies['zapier-platform-cli']);
  });
});
