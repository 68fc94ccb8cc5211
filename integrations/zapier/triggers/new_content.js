'use strict';

// Polling trigger: new items in the content library (uploads, and images and videos that
// actions saved), GET /content/list?limit=50, newest first; `id` is the contentId, so
// Zapier's dedupe fires once per item (a new version of an item does not fire again).

const { baseUrl } = require('../lib/common');
const { asItem, ITEM_OUTPUT_FIELDS, SAMPLE_ITEM } = require('../creates/upload_file');

const FILTERS = ['type', 'source', 'tag'];

const listContent = async (z, inputData = {}) => {
  const params = { limit: 50 };
  FILTERS.forEach((k) => {
    if (inputData[k]) {
      params[k] = inputData[k];
    }
  });
  const response = await z.request({ url: `${baseUrl()}/content/list`, method: 'GET', params });
  return ((response.data && response.data.items) || []).map(asItem);
};

module.exports = {
  key: 'new_content',
  noun: 'Content',
  display: {
    label: 'New Content',
    description: 'Triggers when an image or video is added to your content library.',
  },
  operation: {
    type: 'polling',
    inputFields: [
      {
        key: 'type', label: 'Type', required: false,
        choices: { image: 'Image', video: 'Video' },
        helpText: 'Only images or only videos.',
      },
      {
        key: 'source', label: 'Source', required: false,
        choices: { upload: 'Uploaded', output: 'Made by an action' },
        helpText: 'Only uploaded content, or only what actions produced.',
      },
      { key: 'tag', label: 'Tag', required: false, helpText: 'Only content with this tag.' },
    ],
    perform: (z, bundle) => listContent(z, bundle.inputData || {}),
    sample: SAMPLE_ITEM,
    outputFields: [...ITEM_OUTPUT_FIELDS,
      { key: 'source', label: 'Source' }, { key: 'description', label: 'Description' }],
  },
  FILTERS,
  listContent,
};
