'use strict';

// Gateway input fields (GET /zapier/v1/actions) -> Zapier input fields, and Zapier's
// inputData (strings, mostly) -> the typed JSON body the gateway validates strictly.

const LONG_TEXT = 255; // longer strings get a multi-line box

// Fields the gateway lists (they are part of seed 003's AIMG parameters) but refuses with
// any value but empty or false: a Zap form that offers them can only produce an error, so
// the app never shows or sends them.
const ALWAYS_REFUSED = new Set([
  'restoreFaces', // "face restoration is not supported by this gateway"
  'input', // generate-video: "not supported by this gateway"
  'controlNetPreset', // generate-video: "not supported by this gateway"
]);

// Fields the gateway lists for every (asynchronous) action that the app fills in itself:
// callback_url is Zapier's z.generateCallbackUrl() (creates/action.js).
const APP_SET = new Set(['callback_url']);

const offered = (fields) => (fields || []).filter(
  (f) => !ALWAYS_REFUSED.has(f.key) && !APP_SET.has(f.key));

// Zapier's style guide wants Title Case labels; the gateway writes sentence case
// ("Negative prompt"). Small words stay lower case inside a label, and words that already
// carry capitals (CFG, FPS, ID, ControlNet) are kept as written.
const SMALL_WORDS = new Set(['a', 'an', 'and', 'as', 'at', 'by', 'for', 'in', 'of', 'on', 'or',
  'per', 'the', 'to', 'vs', 'with']);

const titleCase = (text) => String(text).split(/(\s+|[-/(])/).map((word, i) => {
  if (!/^[a-z]/.test(word) || (i > 0 && SMALL_WORDS.has(word))) {
    return word;
  }
  return word.charAt(0).toUpperCase() + word.slice(1);
}).join('');

const toZapierField = (field) => {
  const out = {
    key: field.key,
    label: titleCase(field.label || field.key),
    required: Boolean(field.required),
  };
  switch (field.type) {
    case 'integer':
      out.type = 'integer';
      break;
    case 'number':
      out.type = 'number';
      break;
    case 'boolean':
      out.type = 'boolean';
      break;
    case 'array':
      out.type = 'string';
      out.list = true;
      break;
    default:
      out.type = field.maxLength && field.maxLength > LONG_TEXT ? 'text' : 'string';
  }
  const help = [];
  if (field.helpText) {
    help.push(field.helpText);
  }
  if (field.minimum !== undefined && field.maximum !== undefined) {
    help.push(`Between ${field.minimum} and ${field.maximum}.`);
  } else if (field.maxLength) {
    help.push(`At most ${field.maxLength} characters.`);
  }
  if (help.length) {
    out.helpText = help.join(' ').slice(0, 1000);
  }
  if (Array.isArray(field.choices) && field.choices.length) {
    out.choices = field.choices.map((c) => (c !== null && typeof c === 'object'
      ? { value: String(c.value), label: String(c.label || c.value), sample: String(c.value) }
      : { value: String(c), label: String(c), sample: String(c) }));
  }
  if (field.default !== undefined && field.default !== null && String(field.default) !== '') {
    out.default = String(field.default); // Zapier defaults are strings
  }
  return out;
};

const TRUE = new Set(['true', 'yes', 'y', '1', 'on']);
const FALSE = new Set(['false', 'no', 'n', '0', 'off']);

const coerce = (field, value) => {
  switch (field.type) {
    case 'integer':
    case 'number': {
      if (typeof value === 'number') {
        return value;
      }
      const text = String(value).trim();
      const n = Number(text);
      return text !== '' && Number.isFinite(n) ? n : value; // let the gateway say what is wrong
    }
    case 'boolean': {
      if (typeof value === 'boolean') {
        return value;
      }
      const text = String(value).trim().toLowerCase();
      if (TRUE.has(text)) {
        return true;
      }
      return FALSE.has(text) ? false : value;
    }
    case 'array':
      if (Array.isArray(value)) {
        return value.filter((v) => v !== null && v !== undefined && v !== '');
      }
      return String(value).split(',').map((s) => s.trim()).filter(Boolean);
    default:
      return typeof value === 'string' ? value : String(value);
  }
};

const isEmpty = (v) => v === undefined || v === null || v === ''
  || (Array.isArray(v) && v.length === 0);

// Only the fields the action declares are sent (the gateway rejects unknown fields);
// empty optional values are left out so the gateway's defaults apply.
const buildBody = (fields, inputData) => {
  const body = {};
  offered(fields).forEach((field) => {
    const value = (inputData || {})[field.key];
    if (isEmpty(value)) {
      return;
    }
    const coerced = coerce(field, value);
    if (!isEmpty(coerced)) {
      body[field.key] = coerced;
    }
  });
  return body;
};

module.exports = {
  ALWAYS_REFUSED, APP_SET, buildBody, coerce, offered, titleCase, toZapierField,
};
