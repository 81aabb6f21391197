// The HTTP side under load, the way the seeds do it: identify and track scenarios on
// k6's ramping-arrival-rate executor (open model: iterations start on schedule even
// when the API is slow) with thresholds.
//
//   k6 run loadtests/customerio.js                       # against sluice mock-api
//   BASE_URL=https://track.customer.io SITE_ID=… API_KEY=… PEAK=20 k6 run loadtests/customerio.js
//
// PEAK is requests/s per scenario at the top of the ramp (default 40: both together
// stay under `sluice mock-api`'s default 100 requests/s per workspace). A 429 counts as
// a failed request: this script measures the API, not sluice's limiter.
import { identify, track } from './lib/customerio.js';

export { identify, track };

const PEAK = Number(__ENV.PEAK || 40);
const RAMP = __ENV.RAMP || '1m';
const HOLD = __ENV.HOLD || '3m';

function scenario(exec) {
  return {
    executor: 'ramping-arrival-rate',
    exec,
    startRate: Math.max(1, Math.round(PEAK / 10)),
    timeUnit: '1s',
    preAllocatedVUs: Math.max(10, PEAK),
    maxVUs: Math.max(50, PEAK * 4),
    stages: [
      { target: Math.round(PEAK / 2), duration: RAMP },
      { target: PEAK, duration: RAMP },
      { target: PEAK, duration: HOLD },
      { target: 0, duration: RAMP },
    ],
  };
}

export const options = {
  scenarios: {
    identify_load: scenario('identify'),
    track_load: scenario('track'),
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<500'],
    identify_duration: ['p(95)<500'],
    track_duration: ['p(95)<500'],
    errors: ['rate<0.01'],
    // An open model that ran out of VUs dropped iterations: the load was not offered.
    dropped_iterations: ['count==0'],
  },
};
