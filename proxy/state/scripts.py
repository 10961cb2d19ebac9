"""The Redis store's Lua scripts. Each one's keys share a hash tag (one caller key's, or the
replicas set alone), so on a Redis Cluster each runs on one slot, atomically.

Times come from Redis (`TIME`), so replicas with skewed clocks still share one window.
"""

# Budget, then TPM, then RPM; a request slot is taken only when every check passed.
# Replies {limit or '', retry after, used, requests in the window, tokens in the window, spend}:
# the last three let a replica go on counting from its share of them if the store goes away.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spent, used, n = 0, 0, 0
local budget = tonumber(ARGV[3])
if budget > 0 then
  spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent >= budget then return {'budget', 0, tostring(spent), 0, 0, tostring(spent)} end
end
local tpm = tonumber(ARGV[2])
if tpm > 0 then
  local second = math.floor(now / 1000)
  local buckets = redis.call('HGETALL', KEYS[2])
  local oldest = second
  for i = 1, #buckets, 2 do
    local s = tonumber(buckets[i])
    if s <= second - 60 then
      redis.call('HDEL', KEYS[2], buckets[i])
    else
      used = used + tonumber(buckets[i + 1])
      if s < oldest then oldest = s end
    end
  end
  if used >= tpm then return {'tpm', oldest + 60 - second, tostring(used), 0, used, tostring(spent)} end
end
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', math.ceil((tonumber(first[2]) + 60000 - now) / 1000), tostring(n), n, used, tostring(spent)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 60000)
  n = n + 1
end
return {'', 0, '0', n, used, tostring(spent)}
"""

CHARGE = """
local tokens = tonumber(ARGV[1])
if tokens > 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[1], t[1], tokens)
  redis.call('EXPIRE', KEYS[1], 61)
end
if tonumber(ARGV[2]) > 0 then redis.call('INCRBYFLOAT', KEYS[2], ARGV[2]) end
return 1
"""

# What one replica counted for one key while the store was away, added once: KEYS[4] marks the
# batch applied (for a day), so the same batch sent again (its reply lost) changes nothing.
# ARGV: spend, a member prefix unique to the batch, n, n request ages (ms), then (age ms, tokens) pairs.
SETTLE = """
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', 86400) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[1]) > 0 then redis.call('INCRBYFLOAT', KEYS[3], ARGV[1]) end
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.call('ZADD', KEYS[1], now - tonumber(ARGV[3 + i]), ARGV[2] .. ':' .. i)
end
if n > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[1], 60000)
end
local i = 4 + n
while i < #ARGV do
  redis.call('HINCRBY', KEYS[2], math.floor((now - tonumber(ARGV[i])) / 1000), ARGV[i + 1])
  redis.call('EXPIRE', KEYS[2], 61)
  i = i + 2
end
return 1
"""

# A replica's heartbeat: it is alive now; replicas silent for ARGV[2] ms are not. Replies how many are.
BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
