'use strict';

// Hidden trigger feeding the Model dropdown of the generation creates (generate-image,
// generate-video): GET /getModels, in the operator's order (the first is the default).
// Choosing a model reloads the form (altersDynamicFields), so that the size and sampler
// dropdowns offer exactly that model's allowedWidths, allowedHeights and allowedSamplers.

const { fetchModels } = require('../lib/common');

const toChoice = (model) => ({ ...model, id: model.modelID, name: model.name || model.modelID });

const SAMPLE_MODEL = {
  id: 'tiny',
  modelID: 'tiny',
  name: 'Tiny test model',
  description: 'A tiny random-weight pipeline for tests',
  kind: 'text-to-image',
  minSteps: 1,
  maxSteps: 50,
  defaultSteps: 20,
  allowedWidths: [64, 128, 512],
  allowedHeights: [64, 96, 512],
  maxResolution: 262144,
  defaultResolution: [64, 64],
  allowedSamplers: ['Euler a', 'Euler', 'DDIM'],
  defaultSampler: 'Euler a',
  maxBatchSize: 4,
  maxFrames: 16,
  priceFactor: 1,
};

module.exports = {
  key: 'model_list',
  noun: 'Model',
  display: {
    label: 'List Models',
    description: 'Lists the generation models (feeds the Model dropdowns).',
    hidden: true,
  },
  operation: {
    type: 'polling',
    perform: async (z) => (await fetchModels(z)).map(toChoice),
    sample: SAMPLE_MODEL,
    outputFields: [
      { key: 'id', label: 'Model ID' },
      { key: 'name', label: 'Name' },
      { key: 'kind', label: 'Kind' },
      { key: 'defaultSteps', label: 'Default Steps', type: 'integer' },
      { key: 'defaultSampler', label: 'Default Sampler' },
    ],
  },
  SAMPLE_MODEL,
  toChoice,
};
