-- wrk script: PUT /kv/key-N with a 100-byte value, N uniform over 10,000 keys.
-- Each thread seeds its own generator (wrk threads would otherwise draw the
-- same sequence).
local value = string.rep("v", 100)
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end
function init(args)
  math.randomseed(os.time() * 1000 + tid)
end
request = function()
  local key = "key-" .. math.random(0, 9999)
  return wrk.format("PUT", "/kv/" .. key, nil, value)
end
