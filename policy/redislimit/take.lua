-- Takes one token from every bucket in KEYS, all or none, by the generic
-- cell rate algorithm: a bucket is one hash holding its theoretical
-- arrival time t (the bucket is full at and after it) and the interval i
-- and tolerance u it was computed with, in microseconds.
--
-- ARGV[1] is the time in microseconds, or "" for the server's clock.
-- Then, for each key, three values: the interval between tokens, the
-- tolerance (burst - 1 intervals) and the burst.
--
-- Returns {1, 0} when the tokens were taken, {0, wait} otherwise, wait
-- being the microseconds until every bucket has a token.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

local n = #KEYS
local tats, changed = {}, {}
local wait = 0
for k = 1, n do
  local a = 2 + (k - 1) * 3
  local interval, tau, burst = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local st = redis.call('HMGET', KEYS[k], 't', 'i', 'u')
  local tat = tonumber(st[1])
  if tat == nil then
    tat = now
  else
    local oi, ou = tonumber(st[2]), tonumber(st[3])
    if oi ~= interval or ou ~= tau then
      -- A new rate: keep the tokens held, capped at the new burst.
      local tokens = (ou + oi - math.max(tat - now, 0)) / oi
      tokens = math.min(math.max(tokens, 0), burst)
      local debt = math.ceil((burst - tokens) * interval)
      tat = now + math.min(debt, tau + interval)
      changed[k] = true
    end
  end
  tats[k] = tat
  wait = math.max(wait, tat - tau - now)
end

local function save(k, tat, interval, tau)
  redis.call('HSET', KEYS[k], 't', string.format('%.0f', tat), 'i', string.format('%.0f', interval), 'u', string.format('%.0f', tau))
  -- A bucket that is full again is the same as none: it goes a minute
  -- after that (the minute covers a clock of the caller's, in tests, that
  -- runs slower than the server's).
  redis.call('PEXPIRE', KEYS[k], string.format('%.0f', math.floor(math.max(tat - now, 0) / 1000) + 60000))
end

for k = 1, n do
  local a = 2 + (k - 1) * 3
  local interval, tau = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if wait <= 0 then
    save(k, math.max(tats[k], now) + interval, interval, tau)
  elseif changed[k] then
    save(k, tats[k], interval, tau)
  end
end
if wait > 0 then
  return {0, wait}
end
return {1, 0}
