'use strict';

// REST-hook trigger on `run.completed`: a run of one of the account's projects finished.
// Deliveries are {type: 'run.completed', timestamp, data: {composition, ...}}; perform
// returns the composition (as the composition.* hooks do). performList (the Zap editor's
// "test trigger", and Zapier's polling fallback) reads the latest completed run-project
// compositions: GET /zapier/v1/compositions?action=run-project&status=completed&limit=50.

const { listCompositions, makeHook } = require('./composition_hooks');
const runProject = require('../creates/run_project');

const EVENT = 'run.completed';

// A delivery carries the composition alone (no request meta).
const { meta, ...RUN_SAMPLE } = runProject.operation.sample; // eslint-disable-line no-unused-vars

const listFinishedRuns = (z) => listCompositions(z, EVENT,
  { action: runProject.ACTION, status: 'completed', limit: 50 });

module.exports = makeHook(EVENT, 'project_run_finished', 'Project Run Finished',
  'Triggers when a run of one of your projects completes.',
  (z, bundle) => listFinishedRuns(z, bundle), {
    noun: 'Project Run',
    sample: { ...RUN_SAMPLE, event: EVENT },
    outputFields: [
      { key: 'id', label: 'Run ID' },
      { key: 'status', label: 'Status' },
      { key: 'outputs[]name', label: 'Output Names' },
      { key: 'outputs[]url', label: 'Output URLs' },
      { key: 'txnReceipt', label: 'Receipt' },
      { key: 'refundReceipt', label: 'Refund Receipt' },
    ],
  });
module.exports.listFinishedRuns = listFinishedRuns;
