-- wrk script: GET /kv/key-N, N uniform over 10,000 keys (load them first
-- with put.lua). Set STALE=1 for ?consistency=stale reads.
local suffix = os.getenv("STALE") and "?consistency=stale" or ""
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end
function init(args)
  math.randomseed(os.time() * 1000 + tid)
end
request = function()
  return wrk.format("GET", "/kv/key-" .. math.random(0, 9999) .. suffix)
end
