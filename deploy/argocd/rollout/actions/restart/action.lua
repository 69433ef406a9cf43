-- `tidegate restart NAME`: spec.restartAt now (RFC 3339, UTC); pods created before it are
-- replaced one at a time through the eviction API.
local os = require("os")
obj.spec.restartAt = os.date("!%Y-%m-%dT%XZ")
return obj
