local h = redis.call('HMGET', KEYS[1], 'cut_at', 'paused_until')
if tonumber(ARGV[6]) > tonumber(h[2] or '0') then
  redis.call('HSET', KEYS[1], 'paused_until', ARGV[6])
end
if (h[1] or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'base', ARGV[2], 'cut_at', ARGV[3], 'hold', ARGV[4], 'ceiling', ARGV[5])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
