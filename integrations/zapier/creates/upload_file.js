'use strict';

// "Upload File": stores a file in the account's content library (the gateway action
// upload, 1 credit per started MiB). Zapier hands a `file` field to the app as a URL
// (a hydrated file, or whatever URL an earlier step produced), so the app sends it as
// the action's file_url and the gateway fetches it under its outbound rules; the bytes
// never pass through the app. The generic run_upload create is not built (DEDICATED in
// creates/action.js): a file field is a better form than a plain URL string.

const { baseUrl, pickMeta } = require('../lib/common');

const ACTION = 'upload';

const isEmpty = (v) => v === undefined || v === null || v === '';

// inputData -> the action's body: file_url plus the optional fields that were filled in
// (the gateway rejects unknown fields, and empty ones would only be noise).
const bodyFor = (inputData = {}) => {
  const body = { file_url: inputData.file };
  ['filename', 'description', 'tags', 'content_id'].forEach((k) => {
    if (!isEmpty(inputData[k])) {
      body[k] = Array.isArray(inputData[k]) ? inputData[k].join(',') : String(inputData[k]);
    }
  });
  return body;
};

// The content item, with `id` = contentId (what later steps and Zapier's dedupe use).
const asItem = (item) => ({ id: item.contentId, ...item });

const perform = async (z, bundle) => {
  const response = await z.request({
    url: `${baseUrl()}/zapier/v1/${ACTION}`,
    method: 'POST',
    body: bodyFor(bundle.inputData),
  });
  return { ...asItem(response.data || {}), meta: pickMeta(response.meta) };
};

const SAMPLE_ITEM = {
  id: 'cnt_0123456789abcdef01234567',
  contentId: 'cnt_0123456789abcdef01234567',
  userId: 'acct_0123456789abcdef',
  type: 'image',
  fileName: 'product.png',
  contentType: 'image/png',
  size: 48213,
  checksum: { sha256: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08' },
  description: 'Spring campaign hero',
  tags: ['spring', 'launch'],
  version: 1,
  width: 1200,
  height: 1200,
  duration: null,
  source: 'upload',
  compositionUid: null,
  customMetadata: {},
  permissions: 'owner',
  url: 'https://gateway.example/content/cnt_0123456789abcdef01234567/download',
  createdAt: '2025-01-14T10:30:00.000Z',
  updatedAt: '2025-01-14T10:30:00.000Z',
};

const ITEM_OUTPUT_FIELDS = [
  { key: 'id', label: 'Content ID' },
  { key: 'type', label: 'Type' },
  { key: 'fileName', label: 'File Name' },
  { key: 'contentType', label: 'Content Type' },
  { key: 'size', label: 'Size (Bytes)', type: 'integer' },
  { key: 'checksum__sha256', label: 'SHA-256' },
  { key: 'url', label: 'Download URL (Needs the API Key)' },
  { key: 'createdAt', label: 'Created At', type: 'datetime' },
];

module.exports = {
  key: 'upload_file',
  noun: 'File',
  display: {
    label: 'Upload File',
    description: 'Stores an image or video in your content library (1 credit per started MiB).',
  },
  operation: {
    inputFields: [
      {
        key: 'file',
        label: 'File',
        type: 'file',
        required: true,
        helpText: 'The image or video (JPEG, PNG, WebP, GIF, MP4, MOV, WebM): a file from an '
          + 'earlier step, or a public URL. Its type is read from the bytes.',
      },
      {
        key: 'filename', label: 'File Name', required: false,
        helpText: 'The name to keep (default: from the URL).',
      },
      {
        key: 'description', label: 'Description', type: 'text', required: false,
        helpText: 'What the content is; searchable later.',
      },
      {
        key: 'tags', label: 'Tags', required: false,
        helpText: 'Comma-separated tags, e.g. summer,launch.',
      },
      {
        key: 'content_id', label: 'New Version Of', required: false,
        dynamic: 'content_list.id.label',
        helpText: 'An item of your library: store the file as a new version of it.',
      },
    ],
    perform,
    sample: { ...SAMPLE_ITEM, meta: { creditsUsed: 1, availableCredit: 99, txnReceipt: 'txn_0123456789abcdef01234567' } },
    outputFields: [
      ...ITEM_OUTPUT_FIELDS,
      { key: 'meta__creditsUsed', label: 'Credits Used', type: 'integer' },
      { key: 'meta__txnReceipt', label: 'Receipt' },
    ],
  },
  ACTION,
  ITEM_OUTPUT_FIELDS,
  SAMPLE_ITEM,
  asItem,
  bodyFor,
};
