// The Lua runner that tests deploy/argocd/: gopher-lua at the version Argo CD embeds.
module tidegate.io/hack/lua

go 1.23

require (
	github.com/evanphx/json-patch v5.9.11+incompatible
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
