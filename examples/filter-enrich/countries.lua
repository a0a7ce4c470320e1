-- A small lookup table, required by pipeline.lua: modules beside the
-- pipeline are found by require() (and only those: the sandbox looks nowhere else).
return {
  DE = { name = "Germany", region = "EU" },
  FR = { name = "France", region = "EU" },
  US = { name = "United States", region = "NA" },
  BR = { name = "Brazil", region = "SA" },
  JP = { name = "Japan", region = "APAC" },
}
