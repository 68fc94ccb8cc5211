'use strict';

// Against a live gateway (GATEWAY_URL, GATEWAY_API_KEY, GATEWAY_IMAGE_URL; see README).

const should = require('should');

const {
  apiKeyBundle, apps, clearCatalogueCache, env, parseAppError, requireLiveGateway,
  runWithCallback, startReceiver, testers,
} = require('./helpers');
const { createKey, DEDICATED, SEARCHES } = require('../creates/action');
const { ALWAYS_REFUSED, APP_SET, titleCase } = require('../lib/fields');
const { SAMPLE_FAILED } = require('../triggers/composition_hooks');
const snapshot = require('../catalogue.snapshot.json');

const appTester = testers.api_key;
const App = apps.api_key;

// An ad-hoc request through the app (its middlewares and credentials).
const gw = (method, path, body) => appTester(async (z) => {
  const response = await z.request({ url: `${env.url}${path}`, method, body });
  return response.data;
}, apiKeyBundle());

describe('live gateway', function () {
  this.timeout(60000);
  let receiver;

  before(async function () {
    requireLiveGateway(this);
    receiver = await startReceiver();
  });

  after(async () => {
    if (receiver) {
      await receiver.close();
    }
  });

  describe('authentication', () => {
    it('API key: the auth test returns the account, labelled by username', async () => {
      const me = await appTester(App.authentication.test, apiKeyBundle());
      me.should.have.properties('id', 'username', 'balance', 'plan');
      me.credential.kind.should.equal('api_key');
      const label = await appTester(App.authentication.connectionLabel,
        { ...apiKeyBundle(), inputData: me });
      label.should.equal(me.username);
    });

    it('API key: a bad key is an AUTH_FAILED error', async () => {
      const err = await appTester(App.authentication.test, apiKeyBundle({}, 'gwk_not-a-real-key'))
        .should.be.rejected();
      err.name.should.equal('AppError');
      const info = parseAppError(err);
      info.code.should.equal('AUTH_FAILED');
      info.status.should.equal(401);
    });

    it('OAuth2: a 401 asks Zapier to refresh the token', async () => {
      const err = await testers.oauth2(apps.oauth2.authentication.test,
        { authData: { access_token: 'not-a-real-token' } }).should.be.rejected();
      err.name.should.equal('RefreshAuthError');
    });

    describe('OAuth2 against the gateway provider', function () {
      before(function () {
        if (!env.oauthClientId || !env.oauthClientSecret
          || !(env.oauthCode || env.oauthRefreshToken)) {
          console.log('    (skipped: OAuth2 flow tests need GATEWAY_OAUTH_CLIENT_ID, '
            + 'GATEWAY_OAUTH_CLIENT_SECRET and GATEWAY_OAUTH_CODE (+ GATEWAY_OAUTH_REDIRECT_URI, '
            + 'GATEWAY_OAUTH_CODE_VERIFIER) or GATEWAY_OAUTH_REFRESH_TOKEN)');
          this.skip();
        }
        process.env.CLIENT_ID = env.oauthClientId;
        process.env.CLIENT_SECRET = env.oauthClientSecret;
      });

      let tokens;

      it('exchanges the authorization code (with the PKCE verifier)', async function () {
        if (!env.oauthCode) {
          this.skip();
        }
        tokens = await testers.oauth2(apps.oauth2.authentication.oauth2Config.getAccessToken, {
          inputData: {
            code: env.oauthCode,
            redirect_uri: env.oauthRedirectUri,
            code_verifier: env.oauthCodeVerifier,
          },
        });
        tokens.should.have.property('access_token');
      });

      it('refreshes the access token', async () => {
        const refreshToken = (tokens && tokens.refresh_token) || env.oauthRefreshToken;
        should.exist(refreshToken, 'a refresh token');
        const fresh = await testers.oauth2(
          apps.oauth2.authentication.oauth2Config.refreshAccessToken,
          { authData: { refresh_token: refreshToken } });
        fresh.should.have.property('access_token');
        tokens = { ...(tokens || {}), ...fresh };
      });

      it('passes the auth test with the access token', async () => {
        const me = await testers.oauth2(apps.oauth2.authentication.test,
          { authData: { access_token: tokens.access_token } });
        me.should.have.property('username');
        me.credential.kind.should.not.equal('api_key');
        const out = await testers.oauth2(apps.oauth2.creates.run_echo.operation.perform,
          { authData: { access_token: tokens.access_token }, inputData: { message: 'via oauth' } });
        out.message.should.equal('via oauth');
      });

      it('a dead refresh token is an error (not a refresh loop)', async () => {
        const err = await testers.oauth2(
          apps.oauth2.authentication.oauth2Config.refreshAccessToken,
          { authData: { refresh_token: 'not-a-real-refresh-token' } }).should.be.rejected();
        err.name.should.not.equal('RefreshAuthError');
      });
    });
  });

  describe('creates', () => {
    it('the snapshot lists every action the gateway offers', async () => {
      const catalogue = await gw('GET', '/zapier/v1/actions');
      catalogue.items.map((a) => a.name).sort()
        .should.eql(snapshot.actions.map((a) => a.name).sort());
    });

    it('builds each action\'s input fields live from the catalogue', async () => {
      clearCatalogueCache();
      const catalogue = await gw('GET', '/zapier/v1/actions');
      for (const action of catalogue.items.filter((a) => !DEDICATED[a.name] && !SEARCHES[a.name])) {
        const key = createKey(action.name);
        const fields = await appTester(App.creates[key].operation.inputFields, apiKeyBundle());
        const offered = action.inputFields.filter(
          (f) => !ALWAYS_REFUSED.has(f.key) && !APP_SET.has(f.key));
        fields.map((f) => f.key).should.eql(offered.map((f) => f.key));
        offered.forEach((src, i) => {
          const f = fields[i];
          f.label.should.equal(titleCase(src.label));
          f.required.should.equal(Boolean(src.required));
          const expected = { integer: 'integer', number: 'number', boolean: 'boolean' }[src.type];
          if (expected) {
            f.type.should.equal(expected);
          }
          if (src.type === 'array') {
            f.list.should.be.true();
          }
          if (['modelName', 'width', 'height', 'sampler', 'steps', 'frames'].includes(src.key)) {
            return; // from the model (GET /getModels), checked below
          }
          if (src.helpText) {
            f.helpText.should.startWith(src.helpText);
          }
          if (src.default !== undefined && src.default !== null && src.default !== '') {
            f.default.should.equal(String(src.default));
          }
          if (src.choices) {
            f.choices.map((c) => c.value).should.eql(src.choices.map((c) => String(c.value || c)));
          }
        });
      }
      const estimate = await appTester(App.searches.estimate_cost.operation.inputFields,
        apiKeyBundle());
      const actions = estimate.find((f) => f.key === 'action').choices.map((c) => c.value);
      actions.should.containEql('generate-product-listing');
      actions.should.not.containEql('estimate-cost');
    });

    it('the Model dropdown lists /getModels; sizes and samplers follow the chosen model', async () => {
      const models = await gw('GET', '/getModels');
      models.length.should.be.above(1, 'the gateway under test serves two models');
      const choices = await appTester(App.triggers.model_list.operation.perform, apiKeyBundle());
      choices.map((c) => c.id).should.eql(models.map((m) => m.modelID));
      choices.forEach((c) => c.name.should.be.a.String());
      for (const model of [models[0], models[1]]) {
        const form = await appTester(App.creates.run_generate_image.operation.inputFields,
          apiKeyBundle({ inputData: { modelName: model.modelID } }));
        const byKey = Object.fromEntries(form.map((f) => [f.key, f]));
        byKey.modelName.dynamic.should.equal('model_list.id.name');
        byKey.modelName.altersDynamicFields.should.be.true();
        byKey.width.choices.map((c) => c.value).should.eql(model.allowedWidths.map(String));
        byKey.height.choices.map((c) => c.value).should.eql(model.allowedHeights.map(String));
        byKey.sampler.choices.map((c) => c.value).should.eql(model.allowedSamplers);
        byKey.sampler.default.should.equal(model.defaultSampler);
        byKey.width.default.should.equal(String(model.defaultResolution[0]));
        should.not.exist(byKey.restoreFaces);
      }
      const video = await appTester(App.creates.run_generate_video.operation.inputFields, apiKeyBundle());
      video.map((f) => f.key).should.not.containEql('controlNetPreset');
      video.map((f) => f.key).should.not.containEql('input');
      video.find((f) => f.key === 'sampler').choices.map((c) => c.value)
        .should.eql(models[0].allowedSamplers); // nothing chosen: the default model's
    });

    it('runs echo (string inputs coerced, meta kept)', async () => {
      const out = await appTester(App.creates.run_echo.operation.perform,
        apiKeyBundle({ inputData: { message: 'hello zapier', uppercase: 'true' } }));
      out.message.should.equal('hello zapier');
      out.meta.creditsUsed.should.equal(1);
      out.meta.txnReceipt.should.match(/^txn_/);
      Object.keys(out).sort().should.eql(
        Object.keys(App.creates.run_echo.operation.sample).sort()); // the sample is real
    });

    it('Estimate Cost is a search returning one estimate', async () => {
      const found = await appTester(App.searches.estimate_cost.operation.perform,
        apiKeyBundle({ inputData: { action: 'generate-product-listing' } }));
      found.should.have.length(1);
      found[0].should.have.properties({ id: 'generate-product-listing', action: 'generate-product-listing', credits: 25 });
      found[0].affordable.should.be.a.Boolean();
      Object.keys(found[0]).sort().should.eql(
        Object.keys(App.searches.estimate_cost.operation.sample).sort());
    });

    it('echo-async: perform hands the gateway the callback URL, performResume finishes', async () => {
      const callbackUrl = `${receiver.base}/callback/echo-async`;
      const { results, status } = await runWithCallback(App,
        'creates.run_echo_async.operation.perform',
        apiKeyBundle({ inputData: { message: 'later', delay_ms: '200' } }), callbackUrl);
      status.should.equal('CALLBACK'); // Zapier parks the step until the callback
      results.status.should.be.oneOf('queued', 'running');
      results.id.should.equal(results.uid);
      const delivery = await receiver.waitFor((r) => r.path === '/callback/echo-async');
      delivery.body.type.should.equal('composition.completed');
      const final = await appTester(App.creates.run_echo_async.operation.performResume,
        apiKeyBundle({ outputData: results, cleanedRequest: delivery.body }));
      final.status.should.equal('completed');
      final.id.should.equal(results.uid);
      final.meta.creditsUsed.should.equal(1);
    });
  });

  describe('product listing, posts and hooks', () => {
    let hookCompleted;
    let hookFailed;
    let listing;
    let failedUid;

    it('subscribes the REST hooks', async () => {
      hookCompleted = await appTester(App.triggers.composition_completed.operation.performSubscribe,
        apiKeyBundle({ targetUrl: `${receiver.base}/hooks/completed` }));
      hookCompleted.should.have.property('id');
      hookCompleted.event.should.equal('composition.completed');
      should.not.exist(hookCompleted.secret);
      hookFailed = await appTester(App.triggers.composition_failed.operation.performSubscribe,
        apiKeyBundle({ targetUrl: `${receiver.base}/hooks/failed` }));
      hookFailed.event.should.equal('composition.failed');
      const hooks = await gw('GET', '/zapier/v1/hooks');
      hooks.items.map((h) => h.id).should.containDeep([hookCompleted.id, hookFailed.id]);
    });

    it('generate-product-listing: callback, performResume, outputs', async function () {
      if (!env.imageUrl) {
        this.skip();
      }
      const callbackUrl = `${receiver.base}/callback/listing`;
      const { results } = await runWithCallback(App,
        'creates.run_generate_product_listing.operation.perform',
        apiKeyBundle({
          inputData: {
            product_name: 'Zapier Mug', product_image_url: env.imageUrl, vendor: 'Acme',
            custom_tags: ['zapier', 'mug'],
          },
        }), callbackUrl);
      results.meta.creditsUsed.should.equal(25);
      const delivery = await receiver.waitFor((r) => r.path === '/callback/listing');
      listing = await appTester(App.creates.run_generate_product_listing.operation.performResume,
        apiKeyBundle({ outputData: results, cleanedRequest: delivery.body }));
      listing.status.should.equal('completed');
      listing.outputs.length.should.be.above(0);
      listing.outputs.forEach((o) => o.url.should.match(/^https?:\/\//));
    });

    it('the composition.completed hook delivers and perform returns it', async function () {
      if (!listing) {
        this.skip();
      }
      const delivery = await receiver.waitFor((r) => r.path === '/hooks/completed'
        && r.body.data && r.body.data.composition.uid === listing.uid);
      delivery.headers.should.have.properties('webhook-id', 'webhook-signature');
      const items = await appTester(App.triggers.composition_completed.operation.perform,
        apiKeyBundle({ cleanedRequest: delivery.body }));
      items.should.have.length(1);
      items[0].should.have.properties({ id: listing.uid, status: 'completed', event: 'composition.completed' });
    });

    it('the list-posts trigger returns the listing\'s posts, newest first, with ids', async function () {
      if (!listing) {
        this.skip();
      }
      const posts = await appTester(App.triggers.new_post.operation.perform, apiKeyBundle());
      const mine = posts.filter((p) => p.compositionUid === listing.uid);
      mine.length.should.equal(listing.outputs.length);
      posts.forEach((p) => p.id.should.be.a.String());
      new Set(posts.map((p) => p.id)).size.should.equal(posts.length);
      const times = posts.map((p) => p.createdAt);
      times.should.eql(times.slice().sort().reverse());
      const squares = await appTester(App.triggers.new_post.operation.perform,
        apiKeyBundle({ inputData: { postFormat: 'square' } }));
      squares.forEach((p) => p.postFormat.should.equal('square'));
    });

    it('performList of composition.completed finds recent compositions', async function () {
      if (!listing) {
        this.skip();
      }
      const items = await appTester(App.triggers.composition_completed.operation.performList,
        apiKeyBundle());
      items.map((i) => i.id).should.containEql(listing.uid);
      items.forEach((i) => i.status.should.equal('completed'));
      const mine = items.find((i) => i.id === listing.uid);
      Object.keys(mine).sort().should.eql(
        Object.keys(App.triggers.composition_completed.operation.sample).sort());
    });

    it('a failing listing: performResume fails the step, the failed hook fires', async function () {
      if (!env.imageUrl) {
        this.skip();
      }
      const missing = env.imageUrl.replace(/\/[^/]*$/, '/missing');
      const { results } = await runWithCallback(App,
        'creates.run_generate_product_listing.operation.perform',
        apiKeyBundle({ inputData: { product_name: 'Ghost', product_image_url: missing } }),
        `${receiver.base}/callback/failing`);
      const delivery = await receiver.waitFor((r) => r.path === '/callback/failing');
      delivery.body.type.should.equal('composition.failed');
      const err = await appTester(App.creates.run_generate_product_listing.operation.performResume,
        apiKeyBundle({ outputData: results, cleanedRequest: delivery.body })).should.be.rejected();
      const info = parseAppError(err);
      info.message.should.match(/failed/);
      info.message.should.match(/Refunded/);
      const hook = await receiver.waitFor((r) => r.path === '/hooks/failed');
      const items = await appTester(App.triggers.composition_failed.operation.perform,
        apiKeyBundle({ cleanedRequest: hook.body }));
      items[0].should.have.properties({ id: results.uid, status: 'failed' });
      failedUid = results.uid;
      // the hook's sample is the shape the delivery really has
      Object.keys(items[0]).sort().should.eql(Object.keys(SAMPLE_FAILED).sort());
    });

    it('performList of composition.failed lists real failed compositions, shaped as the sample', async function () {
      if (!failedUid) {
        this.skip();
      }
      const items = await appTester(App.triggers.composition_failed.operation.performList,
        apiKeyBundle());
      items.map((i) => i.id).should.containEql(failedUid);
      items.forEach((item) => {
        item.status.should.equal('failed');
        item.event.should.equal('composition.failed');
        Object.keys(item).sort().should.eql(Object.keys(SAMPLE_FAILED).sort());
        Object.keys(item.error).sort().should.eql(Object.keys(SAMPLE_FAILED.error).sort());
        Object.keys(item.links).sort().should.eql(Object.keys(SAMPLE_FAILED.links).sort());
        item.refundReceipt.should.match(/^txn_/);
      });
      const failed = items.find((i) => i.id === failedUid);
      failed.error.code.should.equal(SAMPLE_FAILED.error.code);
    });

    it('unsubscribes the REST hooks', async function () {
      if (!hookCompleted) {
        this.skip();
      }
      await appTester(App.triggers.composition_completed.operation.performUnsubscribe,
        apiKeyBundle({ subscribeData: hookCompleted }));
      await appTester(App.triggers.composition_failed.operation.performUnsubscribe,
        apiKeyBundle({ subscribeData: hookFailed }));
      const hooks = await gw('GET', '/zapier/v1/hooks');
      hooks.items.map((h) => h.id).should.not.containDeep([hookCompleted.id]);
      hooks.items.map((h) => h.id).should.not.containDeep([hookFailed.id]);
    });
  });

  describe('projects and project runs', () => {
    // text + image (load_image) + number (resize width) variables; every node runs on the
    // cpu queue: 1 credit each for load_image, resize and overlay_text.
    const NODES = [
      { id: 'caption', type: 'text', inputs: { template: 'Hi {{subject}}' } },
      { id: 'photo', type: 'load_image', inputs: { url: { variable: 'photo' } } },
      {
        id: 'small', type: 'resize',
        inputs: {
          image: { node: 'photo', output: 'image' }, width: { variable: 'width' }, height: 32,
          mode: 'pad',
        },
      },
      {
        id: 'label', type: 'overlay_text',
        inputs: { image: { node: 'small', output: 'image' }, text: { node: 'caption', output: 'text' } },
      },
      { id: 'out', type: 'output', inputs: { value: { node: 'label', output: 'image' }, name: 'picture' } },
    ];
    const VARIABLES = [
      { name: 'subject', type: 'text', default: 'world', help: 'Who to greet', required: false },
      { name: 'width', type: 'number', default: 48, help: 'Width in pixels', required: false },
      { name: 'photo', type: 'image', help: 'The picture', required: true },
    ];
    const PROJECT_NAME = 'Zapier greeting';
    let projectId;
    let hook;
    let run;

    before(async function () {
      if (!env.imageUrl) {
        console.log('    (skipped: project runs need GATEWAY_IMAGE_URL)');
        this.skip();
      }
      const created = await gw('POST', '/api/project/create', {
        name: PROJECT_NAME, description: 'made by the Zapier app tests', visibility: 'private',
        node_data: NODES, connection_data: [], manual_data: VARIABLES,
      });
      projectId = created.project_id;
      should.exist(projectId);
    });

    it('the project dropdown lists the account\'s projects, paged from page 0', async () => {
      const first = await appTester(App.triggers.project_list.operation.perform,
        apiKeyBundle({ meta: { page: 0 } }));
      first.find((p) => p.id === projectId).should.have.properties({ name: PROJECT_NAME });
      const beyond = await appTester(App.triggers.project_list.operation.perform,
        apiKeyBundle({ meta: { page: 1 } })); // a fresh account has fewer than 100 projects
      beyond.should.eql([]);
    });

    it('builds the variable fields from the chosen project', async () => {
      const fields = await appTester(App.creates.run_project.operation.inputFields,
        apiKeyBundle({ inputData: { project_id: projectId } }));
      fields.map((f) => f.key).should.eql(
        ['project_id', 'var__subject', 'var__width', 'var__photo', 'seed', 'use_cache']);
      const byKey = Object.fromEntries(fields.map((f) => [f.key, f]));
      byKey.var__subject.should.have.properties(
        { type: 'string', required: false, default: 'world', helpText: 'Who to greet' });
      byKey.var__width.should.have.properties({ type: 'number', default: '48' });
      byKey.var__photo.should.have.properties({ type: 'string', required: true });
      byKey.var__photo.helpText.should.match(/image URL/);
    });

    it('a bad variable value is the gateway\'s INVALID_REQUEST, before any debit', async () => {
      const err = await appTester(App.creates.run_project.operation.perform, apiKeyBundle({
        inputData: { project_id: projectId, var__width: 'wide', var__photo: env.imageUrl },
      })).should.be.rejected();
      const info = parseAppError(err);
      info.should.have.properties({ code: 'INVALID_REQUEST', status: 400 });
      info.message.should.match(/variables\.width/);
    });

    it('subscribes the Project Run Finished hook', async () => {
      hook = await appTester(App.triggers.project_run_finished.operation.performSubscribe,
        apiKeyBundle({ targetUrl: `${receiver.base}/hooks/run-completed` }));
      hook.should.have.property('id');
      hook.event.should.equal('run.completed');
      should.not.exist(hook.secret);
    });

    it('runs the project: debit = estimate, callback, performResume, outputs', async () => {
      const inputData = {
        project_id: projectId, var__subject: 'zapier', var__width: '40', var__photo: env.imageUrl,
        seed: '7', use_cache: 'false',
      };
      const quote = await gw('POST', '/api/project/runs/estimate', {
        project_id: projectId, seed: 7, variables: { subject: 'zapier', width: 40, photo: env.imageUrl },
      });
      const { results, status } = await runWithCallback(App,
        'creates.run_project.operation.perform', apiKeyBundle({ inputData }),
        `${receiver.base}/callback/run-project`);
      status.should.equal('CALLBACK');
      results.action.should.equal('run-project');
      results.id.should.equal(results.uid);
      results.status.should.be.oneOf('queued', 'running');
      results.meta.creditsUsed.should.equal(quote.estimated_cost);
      const delivery = await receiver.waitFor((r) => r.path === '/callback/run-project');
      run = await appTester(App.creates.run_project.operation.performResume,
        apiKeyBundle({ outputData: results, cleanedRequest: delivery.body }));
      run.status.should.equal('completed');
      run.id.should.equal(results.uid);
      run.meta.txnReceipt.should.match(/^txn_/);
      run.outputs.should.have.length(1);
      run.outputs[0].should.have.properties({ type: 'image', name: 'picture', width: 40, height: 32 });
      run.outputs[0].url.should.match(/^https?:\/\//);
      const record = await gw('GET', `/api/project/runs/${run.uid}`);
      record.should.have.properties({ status: 'completed', seed: 7, project_id: projectId });
      record.variables.should.have.properties({ subject: 'zapier', width: 40 });
    });

    it('the run.completed hook delivers the run and perform returns it', async function () {
      if (!run) {
        this.skip();
      }
      const delivery = await receiver.waitFor((r) => r.path === '/hooks/run-completed'
        && r.body.data && r.body.data.composition && r.body.data.composition.uid === run.uid);
      delivery.body.type.should.equal('run.completed');
      const items = await appTester(App.triggers.project_run_finished.operation.perform,
        apiKeyBundle({ cleanedRequest: delivery.body }));
      items.should.have.length(1);
      items[0].should.have.properties({ id: run.uid, status: 'completed', event: 'run.completed' });
    });

    it('performList (polling fallback) lists completed project runs', async function () {
      if (!run) {
        this.skip();
      }
      const items = await appTester(App.triggers.project_run_finished.operation.performList,
        apiKeyBundle());
      items.map((i) => i.id).should.containEql(run.uid);
      items.forEach((i) => i.should.have.properties({ action: 'run-project', status: 'completed' }));
    });

    it('unsubscribes the Project Run Finished hook', async function () {
      if (!hook) {
        this.skip();
      }
      await appTester(App.triggers.project_run_finished.operation.performUnsubscribe,
        apiKeyBundle({ subscribeData: hook }));
      const hooks = await gw('GET', '/zapier/v1/hooks');
      hooks.items.map((h) => h.id).should.not.containEql(hook.id);
    });
  });

  describe('content library', () => {
    let uploaded;

    it('Upload File sends the file URL to the upload action and returns the item', async function () {
      if (!env.imageUrl) {
        this.skip();
      }
      uploaded = await appTester(App.creates.upload_file.operation.perform, apiKeyBundle({
        inputData: { file: env.imageUrl, description: 'from zapier', tags: 'zapier,test' },
      }));
      uploaded.id.should.equal(uploaded.contentId);
      uploaded.id.should.match(/^cnt_/);
      uploaded.type.should.equal('image');
      uploaded.description.should.equal('from zapier');
      uploaded.tags.should.eql(['zapier', 'test']);
      uploaded.meta.creditsUsed.should.be.aboveOrEqual(1);
      uploaded.meta.txnReceipt.should.match(/^txn_/);
    });

    it('New Content lists it first, with id = contentId, and filters by tag', async function () {
      if (!uploaded) {
        this.skip();
      }
      const items = await appTester(App.triggers.new_content.operation.perform, apiKeyBundle());
      items[0].id.should.equal(uploaded.id);
      items.forEach((item) => item.id.should.equal(item.contentId));
      const tagged = await appTester(App.triggers.new_content.operation.perform,
        apiKeyBundle({ inputData: { tag: 'zapier', type: 'image' } }));
      tagged.map((i) => i.id).should.containEql(uploaded.id);
      const none = await appTester(App.triggers.new_content.operation.perform,
        apiKeyBundle({ inputData: { tag: 'no-such-tag' } }));
      none.should.eql([]);
    });

    it('the content dropdown lists it, labelled, paged from page 0', async function () {
      if (!uploaded) {
        this.skip();
      }
      const first = await appTester(App.triggers.content_list.operation.perform,
        apiKeyBundle({ meta: { page: 0 } }));
      const mine = first.find((i) => i.id === uploaded.id);
      should.exist(mine);
      mine.label.should.startWith(`${uploaded.fileName} (image, `);
      const past = await appTester(App.triggers.content_list.operation.perform,
        apiKeyBundle({ meta: { page: 1000 } }));
      past.should.eql([]);
    });

    it('a file URL the gateway refuses is its 400 error', async () => {
      const err = await appTester(App.creates.upload_file.operation.perform, apiKeyBundle({
        inputData: { file: 'ftp://files.example/a.png' },
      })).then(() => null, (e) => e);
      should.exist(err);
      parseAppError(err).status.should.equal(400);
    });
  });

  describe('receipt search', () => {
    it('finds a receipt', async () => {
      const echo = await appTester(App.creates.run_echo.operation.perform,
        apiKeyBundle({ inputData: { message: 'receipt please' } }));
      const found = await appTester(App.searches.find_receipt.operation.perform,
        apiKeyBundle({ inputData: { txnReceipt: echo.meta.txnReceipt } }));
      found.should.have.length(1);
      found[0].txnReceipt.should.equal(echo.meta.txnReceipt);
      found[0].type.should.equal('debit');
      found[0].should.have.property('id');
    });

    it('returns an empty list for an unknown receipt', async () => {
      const found = await appTester(App.searches.find_receipt.operation.perform,
        apiKeyBundle({ inputData: { txnReceipt: 'txn_000000000000000000000000' } }));
      found.should.eql([]);
    });
  });

  describe('error mapping', () => {
    it('a gateway validation error becomes a Zapier error with its code and details', async () => {
      const err = await appTester(App.creates.run_echo.operation.perform,
        apiKeyBundle({ inputData: { message: 'x'.repeat(2001) } })).should.be.rejected();
      err.name.should.equal('AppError');
      const info = parseAppError(err);
      info.code.should.equal('INVALID_REQUEST');
      info.status.should.equal(400);
      info.message.should.match(/message/);
    });

    describe('with a key that has no credits and a one-request-a-minute plan', function () {
      before(function () {
        if (!env.limitedKey) {
          console.log('    (skipped: GATEWAY_LIMITED_API_KEY is not set)');
          this.skip();
        }
      });

      it('INSUFFICIENT_CREDITS is a 403 error, then RATE_LIMITED a ThrottledError', async () => {
        const err = await appTester(App.creates.run_echo.operation.perform,
          apiKeyBundle({ inputData: { message: 'no money' } }, env.limitedKey)).should.be.rejected();
        parseAppError(err).should.have.properties({ code: 'INSUFFICIENT_CREDITS', status: 403 });
        const throttled = await appTester(App.authentication.test,
          apiKeyBundle({}, env.limitedKey)).should.be.rejected();
        throttled.name.should.equal('ThrottledError');
        const info = JSON.parse(throttled.message);
        info.delay.should.be.a.Number().and.be.above(0);
      });
    });
  });
});
