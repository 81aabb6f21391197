local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tat', 'acc_sec', 'acc_n', 'acc_prev', 'm_cur', 'm_prev', 'm_from')
local tat = tonumber(h[1] or '0')
local m_cur, m_prev, m_from = tonumber(h[5] or '0'), tonumber(h[6] or '0'), tonumber(h[7] or '0')
local period = tonumber(ARGV[7])
if now - m_from >= 2 * period then
  m_prev, m_cur, m_from = 0, 0, now
elseif now - m_from >= period then
  m_prev, m_cur, m_from = m_cur, 0, m_from + period
end
m_cur = math.max(m_cur, tonumber(ARGV[5]))
local margin = math.max(m_cur, m_prev)
interval = interval + math.floor(margin / math.max(tonumber(ARGV[6]), 1))
local sec = math.floor(now / 1000000)
local acc_sec, acc_n, acc_prev = tonumber(h[2] or '0'), tonumber(h[3] or '0'), tonumber(h[4] or '0')
if sec ~= acc_sec then
  if sec == acc_sec + 1 then acc_prev = acc_n else acc_prev = 0 end
  acc_n = 0
  acc_sec = sec
end
acc_n = acc_n + tonumber(ARGV[4])
local first = math.max(tat, now)
local n = 0
if first - now <= horizon then
  n = math.min(want, math.floor((now + horizon - first) / interval) + 1)
  tat = first + n * interval
end
local f = function(x) return string.format('%.0f', x) end
redis.call('HSET', KEYS[1], 'tat', f(tat), 'acc_sec', f(acc_sec), 'acc_n', f(acc_n), 'acc_prev', f(acc_prev),
  'm_cur', f(m_cur), 'm_prev', f(m_prev), 'm_from', f(m_from))
redis.call('PEXPIRE', KEYS[1], 86400000)
local frac = (now % 1000000) / 1000000
local accepted = acc_prev * (1 - frac) + acc_n
local l = redis.call('HMGET', KEYS[1], 'base', 'cut_at', 'hold', 'ceiling', 'paused_until')
return {f(n), f(first), f(now), l[1] or '', l[2] or '', l[3] or '',
        l[4] or '', l[5] or '', string.format('%.3f', accepted), f(interval)}
