-- PUT a 1 MiB value (1,048,576 bytes of text) to one of 64 keys, seed API body: the large-value
-- figure (MB/s through one durable node). Run from ../shared/bench like the other scripts.
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
local value = string.rep("v", 1048576)
request = function()
  local k = math.random(1, 64)
  return wrk.format(nil, "/kv-store/keys/big" .. k, nil, '{"value":"' .. value .. '","causal-context":{}}')
end
