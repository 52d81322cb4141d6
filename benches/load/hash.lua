-- wrk script for the hash scenario (benches/load.sh): every request carries
-- "X-User: user-<random of 1,000,000>", the key of the proxies' consistent hash.
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local random = math.random
local format = wrk.format

request = function()
  return format("GET", "/hash", { ["X-User"] = "user-" .. random(1, 1000000) })
end
