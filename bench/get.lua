-- wrk script: GET /kv/key-N, N uniform over 10,000 keys (load them first
-- with put.lua). Set STALE=1 for ?consistency=stale reads.
math.randomseed(os.time())
local suffix = os.getenv("STALE") and "?consistency=stale" or ""
request = function()
  return wrk.format("GET", "/kv/key-" .. math.random(0, 9999) .. suffix)
end
