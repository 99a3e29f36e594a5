-- wrk script: PUT /kv/key-N with 100-byte values, N counting up per thread
-- (threads interleave), wrapping at KEYS (env, default 1,000,000), so a long
-- enough run writes every key.
local counter = 0
local step, keys
local value = string.rep("x", 100)
local threads = {}

function setup(thread)
  thread:set("first", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = first
  step = tonumber(os.getenv("THREADS") or "2")
  keys = tonumber(os.getenv("KEYS") or "1000000")
end

request = function()
  local key = "key-" .. (counter % keys)
  counter = counter + step
  return wrk.format("PUT", "/kv/" .. key, nil, value)
end
