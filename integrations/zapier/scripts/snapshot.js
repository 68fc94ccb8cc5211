#!/usr/bin/env node
'use strict';

// Refresh catalogue.snapshot.json from a live gateway:
//   GATEWAY_URL=https://gw.example GATEWAY_API_KEY=gwk_... npm run snapshot
// The snapshot fixes which creates the app version has (one per action); the input
// fields of each create are still read live from the gateway when a Zap is edited.

const fs = require('fs');
const path = require('path');

const main = async () => {
  const base = (process.env.GATEWAY_URL || '').replace(/\/+$/, '');
  const key = process.env.GATEWAY_API_KEY;
  if (!base || !key) {
    throw new Error('GATEWAY_URL and GATEWAY_API_KEY are required');
  }
  const res = await fetch(`${base}/zapier/v1/actions`, {
    headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' },
  });
  const body = await res.json();
  if (!res.ok || !body.success) {
    throw new Error(`catalogue request failed: HTTP ${res.status} ${JSON.stringify(body.error)}`);
  }
  const actions = body.data.items.map((a) => ({
    name: a.name, title: a.title, description: a.description, credits: a.credits,
    async: a.async, ttl: a.ttl, inputFields: a.inputFields,
  }));
  const file = path.join(__dirname, '..', 'catalogue.snapshot.json');
  fs.writeFileSync(file, `${JSON.stringify({ actions }, null, 2)}\n`);
  console.log(`wrote ${actions.length} actions to ${file}`);
};

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
