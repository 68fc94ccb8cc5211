'use strict';

// Polling trigger: new compiled posts (GET /list-posts, newest first; `id` dedupes).

const { baseUrl } = require('../lib/common');

const listPosts = async (z, params) => {
  const response = await z.request({
    url: `${baseUrl()}/list-posts`,
    method: 'GET',
    params: { limit: 50, ...params },
  });
  const data = response.data || {};
  return data.items || data.itemList || [];
};

const SAMPLE_POST = {
  id: 'post_04376349689dba8a04aa',
  urn: 'post_04376349689dba8a04aa',
  cardPoster: 'https://gateway.example/outputs/comp_79bf7c0b0b04080e8ce8/main.jpg',
  deliverable: {
    type: 'image', kind: 'main', url: 'https://gateway.example/outputs/comp_79bf7c0b0b04080e8ce8/main.jpg',
    format: 'jpg', width: 1200, height: 1200,
  },
  platform: 'marketplace',
  postFormat: 'square',
  contentType: 'product-listing',
  customTags: [],
  contentLabel: '',
  compositionUid: 'comp_79bf7c0b0b04080e8ce8',
  createdAt: '2025-01-14T10:30:04.000Z',
  updatedAt: '2025-01-14T10:30:04.000Z',
};

module.exports = {
  key: 'new_post',
  noun: 'Post',
  display: {
    label: 'New Post',
    description: 'Triggers when a finished action (e.g. a product listing) produces a new post.',
  },
  operation: {
    type: 'polling',
    inputFields: [
      {
        key: 'postFormat', label: 'Post Format', required: false,
        choices: { square: 'Square', banner: 'Banner' },
        helpText: 'Only posts of this format.',
      },
      {
        key: 'searchText', label: 'Search Text', required: false,
        helpText: 'Only posts whose product name, vendor or description contains this text.',
      },
    ],
    perform: (z, bundle) => {
      const params = {};
      ['postFormat', 'searchText'].forEach((k) => {
        if (bundle.inputData && bundle.inputData[k]) {
          params[k] = bundle.inputData[k];
        }
      });
      return listPosts(z, params);
    },
    sample: SAMPLE_POST,
    outputFields: [
      { key: 'id', label: 'Post ID' },
      { key: 'compositionUid', label: 'Composition UID' },
      { key: 'postFormat', label: 'Post Format' },
      { key: 'deliverable__url', label: 'Image URL' },
      { key: 'createdAt', label: 'Created At', type: 'datetime' },
    ],
  },
  listPosts,
  SAMPLE_POST,
};
