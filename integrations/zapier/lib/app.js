'use strict';

// Builds the app definition for one auth type ('oauth2' or 'api_key').

const zapier = require('zapier-platform-core');

const authentication = require('./authentication');
const { addAuthHeader, handleEnvelope } = require('./common');
const { creates } = require('../creates/action');
const runProject = require('../creates/run_project');
const uploadFile = require('../creates/upload_file');
const hooks = require('../triggers/composition_hooks');
const contentList = require('../triggers/content_list');
const modelList = require('../triggers/model_list');
const newContent = require('../triggers/new_content');
const newPost = require('../triggers/new_post');
const projectList = require('../triggers/project_list');
const projectRunFinished = require('../triggers/project_run_finished');
const estimateCost = require('../searches/estimate_cost');
const receipt = require('../searches/receipt');

const AUTH_TYPES = ['oauth2', 'api_key'];

const byKey = (list) => Object.fromEntries(list.map((item) => [item.key, item]));

const stripHelpers = (op) => {
  // modules export helpers beside the definition; the definition takes only schema keys
  const { key, noun, display, operation } = op;
  return { key, noun, display, operation };
};

const buildApp = ({ authType = 'oauth2' } = {}) => {
  if (!AUTH_TYPES.includes(authType)) {
    throw new Error(`unknown auth type ${authType}; expected one of ${AUTH_TYPES.join(', ')}`);
  }
  return {
    version: require('../package.json').version,
    platformVersion: zapier.version,
    authentication: authType === 'api_key' ? authentication.apiKey : authentication.oauth2,
    beforeRequest: [addAuthHeader(authType)],
    afterResponse: [handleEnvelope(authType)],
    triggers: byKey([newPost, newContent, hooks.completed, hooks.failed, projectList,
      projectRunFinished, modelList, contentList]
      .map(stripHelpers)),
    searches: byKey([receipt, estimateCost].map(stripHelpers)),
    creates: byKey([...creates, stripHelpers(runProject), stripHelpers(uploadFile)]),
  };
};

const authTypeFromEnv = (env = process.env) => (env.ZAPIER_AUTH === 'api_key' ? 'api_key' : 'oauth2');

module.exports = { AUTH_TYPES, authTypeFromEnv, buildApp };
