// tidegate-lua runs an Argo CD resource customization (health.lua, discovery.lua or an
// action.lua) the way Argo CD's util/lua does, on gopher-lua (Lua 5.1), so that
// deploy/argocd/ is tested against the interpreter Argo CD embeds, not a lookalike.
//
//	tidegate-lua health    SCRIPT < object.json   -> {"status": ..., "message": ...}
//	tidegate-lua discovery SCRIPT < object.json   -> {"action": {"disabled": ...}, ...}
//	tidegate-lua action    SCRIPT < object.json   -> {"object": ..., "statusPatch": ..., "patch": ...}
//
// What it reproduces of Argo CD (argo-cd util/lua/lua.go and server/application):
//   - VM.runLuaWithResourceActionParameters: libraries skipped (a customization from argocd-cm
//     runs without useOpenLibs) except package, base, table and a safe os with only time and
//     date; `obj` a global decoded from the object; a one-second deadline.
//   - ExecuteHealthLua: a table result; a status outside Argo's set becomes Unknown with
//     "Lua returned an invalid health status"; nil is an empty health.
//   - ExecuteResourceAction: the table encoded with layeh.com/gopher-json (an empty table is
//     []), then cleanReturnedObj (an empty [] where the live object had a map becomes {}).
//   - Server.patchResource: a JSON merge patch from the live object to the new one
//     (evanphx/json-patch CreateMergePatch), split by splitStatusPatch: when status changed,
//     the whole patch goes to the status subresource, then the rest to the object.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

var healthStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Suspended": true, "Degraded": true, "Missing": true, "Unknown": true,
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tidegate-lua: "+format+"\n", args...)
	os.Exit(1)
}

func decode(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decode(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decode(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// safeOs keeps only os.time and os.date, as Argo CD's OpenSafeOs does.
func safeOs(l *lua.LState) *lua.LTable {
	full := l.NewTable()
	l.Push(l.NewFunction(lua.OpenOs))
	l.Call(0, 1)
	opened := l.Get(-1).(*lua.LTable)
	l.Pop(1)
	for _, name := range []string{"time", "date"} {
		full.RawSetString(name, opened.RawGetString(name))
	}
	return full
}

func run(script string, obj map[string]any) lua.LValue {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true}, lua.LString(pair.n)); err != nil {
			fail("opening %s: %v", pair.n, err)
		}
	}
	osTable := safeOs(l)
	l.SetGlobal(lua.OsLibName, osTable)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int { l.Push(osTable); return 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.NewTable())
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		fail("%v", err)
	}
	return l.Get(-1)
}

func encode(value lua.LValue) []byte {
	if value.Type() != lua.LTTable {
		fail("expect table output from Lua script, not %s", value.Type().String())
	}
	out, err := luajson.Encode(value)
	if err != nil {
		fail("encoding the result: %v", err)
	}
	return out
}

// cleanReturned undoes gopher-json's [] for an empty table where the live object had a map.
func cleanReturned(newObj, old map[string]any) map[string]any {
	for key, oldValue := range old {
		newValue, ok := newObj[key]
		if !ok {
			continue
		}
		switch nv := newValue.(type) {
		case map[string]any:
			if ov, ok := oldValue.(map[string]any); ok {
				newObj[key] = cleanReturned(nv, ov)
			}
		case []any:
			switch ov := oldValue.(type) {
			case map[string]any:
				if len(nv) == 0 {
					newObj[key] = map[string]any{}
				}
			case []any:
				for i := range nv {
					if i >= len(ov) {
						break
					}
					if m, ok := nv[i].(map[string]any); ok {
						if om, ok := ov[i].(map[string]any); ok {
							nv[i] = cleanReturned(m, om)
						}
					}
				}
			}
		}
	}
	return newObj
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: tidegate-lua health|discovery|action SCRIPT < object.json")
	}
	mode, path := os.Args[1], os.Args[2]
	source, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	live, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("%v", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(live, &obj); err != nil {
		fail("the object: %v", err)
	}
	result := run(string(source), obj)
	var out any
	switch mode {
	case "health":
		if result.Type() == lua.LTNil {
			out = map[string]any{}
			break
		}
		var hs struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(encode(result), &hs); err != nil {
			fail("health result: %v", err)
		}
		if !healthStatuses[hs.Status] {
			hs.Status, hs.Message = "Unknown", "Lua returned an invalid health status"
		}
		out = hs
	case "discovery":
		var actions map[string]any
		if err := json.Unmarshal(encode(result), &actions); err != nil {
			fail("discovery result: %v", err)
		}
		out = actions
	case "action":
		var newObj map[string]any
		if err := json.Unmarshal(encode(result), &newObj); err != nil {
			fail("action result (expected the object): %v", err)
		}
		newObj = cleanReturned(newObj, obj)
		newBytes, _ := json.Marshal(newObj)
		patch, err := jsonpatch.CreateMergePatch(live, newBytes)
		if err != nil {
			fail("merge patch: %v", err)
		}
		var diff map[string]any
		_ = json.Unmarshal(patch, &diff)
		res := map[string]any{"object": newObj, "statusPatch": nil, "patch": nil}
		if len(diff) > 0 {
			if _, ok := diff["status"]; ok {
				res["statusPatch"] = diff // Argo sends the whole diff to the status subresource
				rest := map[string]any{}
				for k, v := range diff {
					if k != "status" {
						rest[k] = v
					}
				}
				if len(rest) > 0 {
					res["patch"] = rest
				}
			} else {
				res["patch"] = diff
			}
		}
		out = res
	default:
		fail("unknown mode %q: health, discovery or action", mode)
	}
	encoded, _ := json.Marshal(out)
	fmt.Println(string(encoded))
}
