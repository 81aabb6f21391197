// Shared by the k6 scripts: Customer.io Track API v1 requests (identify = PUT
// /api/v1/customers/{id}, track = POST /api/v1/customers/{id}/events) with Basic auth,
// against BASE_URL (default: `sluice mock-api` on 127.0.0.1:8080).
//
// Events are generated (user `k6-<VU>-<n>`, a per-VU `seq`), or read from EVENTS_FILE:
// the JSON lines `sluice loadgen --to-file` writes, so k6 sends the very events the
// pipeline test produces into Kafka.
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Rate, Trend } from 'k6/metrics';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const SITE_ID = __ENV.SITE_ID || 'loadtest-site';
const API_KEY = __ENV.API_KEY || 'loadtest-key';
const AUTH = `Basic ${encoding.b64encode(`${SITE_ID}:${API_KEY}`)}`;
const PARAMS = { headers: { Authorization: AUTH, 'Content-Type': 'application/json' } };

export const errors = new Rate('errors');
export const identifyDuration = new Trend('identify_duration', true);
export const trackDuration = new Trend('track_duration', true);

// Loadgen events, split by type (empty when EVENTS_FILE is not set).
const events = new SharedArray('events', () => {
  if (!__ENV.EVENTS_FILE) return [];
  return open(__ENV.EVENTS_FILE)
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line).value)
    .filter((value) => typeof value === 'string')
    .map((value) => {
      try { return JSON.parse(value); } catch (_) { return null; }
    })
    .filter((e) => e && e.userId && (e.type === 'identify' || e.type === 'track'));
});

let seq = 0;

function nextEvent(type) {
  if (events.length > 0) {
    // The file in order (both scenarios share it; the type follows the file's mix).
    // k6 runs iterations concurrently, so a user's events can still arrive out of
    // order: per-user order is what `sluice loadgen` through the worker checks.
    const i = exec.scenario.iterationInTest * 2 + (type === 'identify' ? 0 : 1);
    return events[i % events.length];
  }
  seq += 1;
  const user = `k6-${__VU}-${seq % 50}`;
  return type === 'identify'
    ? { type, userId: user, traits: { seq, email: `${user}@example.com`, plan: 'pro' } }
    : { type, userId: user, event: 'Order Placed', properties: { seq, total: 42.5 } };
}

function send(event) {
  const id = encodeURIComponent(event.userId);
  if (event.type === 'identify') {
    const res = http.put(`${BASE_URL}/api/v1/customers/${id}`, JSON.stringify(event.traits || {}), PARAMS);
    identifyDuration.add(res.timings.duration);
    return res;
  }
  const body = { name: event.event, data: event.properties || {} };
  const res = http.post(`${BASE_URL}/api/v1/customers/${id}/events`, JSON.stringify(body), PARAMS);
  trackDuration.add(res.timings.duration);
  return res;
}

export function identify() {
  const res = send(nextEvent('identify'));
  errors.add(!check(res, { 'identify accepted (200)': (r) => r.status === 200 }));
}

export function track() {
  const res = send(nextEvent('track'));
  errors.add(!check(res, { 'track accepted (200)': (r) => r.status === 200 }));
}
