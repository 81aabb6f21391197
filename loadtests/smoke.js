// A ~25 s smoke test of the HTTP side, for CI: a few requests/s of identify and track
// against BASE_URL (default `sluice mock-api` on 127.0.0.1:8080), the same thresholds as
// the load script. Exit code 99 when a threshold fails (k6's code).
//
//   k6 run loadtests/smoke.js
import { identify, track } from './lib/customerio.js';

export { identify, track };

const RATE = Number(__ENV.RATE || 10);

function scenario(exec) {
  return {
    executor: 'ramping-arrival-rate',
    exec,
    startRate: 1,
    timeUnit: '1s',
    preAllocatedVUs: 5,
    maxVUs: 20,
    stages: [
      { target: RATE, duration: '5s' },
      { target: RATE, duration: '15s' },
      { target: 0, duration: '5s' },
    ],
  };
}

export const options = {
  scenarios: {
    identify_smoke: scenario('identify'),
    track_smoke: scenario('track'),
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<500'],
    errors: ['rate<0.01'],
    checks: ['rate>0.99'],
    dropped_iterations: ['count==0'],
  },
};
