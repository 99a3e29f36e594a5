-- wrk script: PUT /kv/key-N with a 100-byte value, N uniform over 10,000 keys.
local value = string.rep("v", 100)
math.randomseed(os.time())
request = function()
  local key = "key-" .. math.random(0, 9999)
  return wrk.format("PUT", "/kv/" .. key, nil, value)
end
