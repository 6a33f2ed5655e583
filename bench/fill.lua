-- bench/fill.lua: wrk script of bench/compare.sh's purge test. Every request asks for a
-- new URL, /p/items?id=N, so every request is a miss that slate stores: it fills the cache
-- with as many distinct entries as requests. Usage:
--   wrk -t2 -c64 -d120s -s bench/fill.lua http://127.0.0.1:PORT -- QUOTA_PER_THREAD THREADS
-- Thread i asks for ids i, i + THREADS, i + 2*THREADS, ... and stops after QUOTA_PER_THREAD
-- answers (wrk's -d still bounds the run). Non-200 answers are counted in wrk's
-- "Non-2xx or 3xx responses" line.

local next_index = 0

function setup(thread)
   thread:set("index", next_index)
   next_index = next_index + 1
end

function init(args)
   quota = tonumber(args[1]) or 1000
   stride = tonumber(args[2]) or 1
   n = index
   answers = 0
end

function request()
   local path = "/p/items?id=" .. n
   n = n + stride
   return wrk.format("GET", path)
end

function response(status, headers, body)
   answers = answers + 1
   if answers >= quota then
      wrk.thread:stop()
   end
end
