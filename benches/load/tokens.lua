-- wrk script for the jwt-hs256-new scenario (benches/load.sh): each request carries the next of
-- the valid HS256 tokens in the file given as the script's argument (one per line, 4,096 of
-- them: four times the verified-token cache's slots), so that nearly every check verifies a
-- signature instead of finding the token kept. Also sends the X-User header of the other
-- gateway scenarios, so that their request heads match.
local tokens = {}
local next_token = 1

init = function(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  if #tokens == 0 then
    error("no tokens in " .. tostring(args[1]))
  end
end

request = function()
  local t = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format("GET", "/jwt-hs256-new", { ["X-User"] = "bench-user", ["Authorization"] = t })
end
