-- teardown.lua: a Wireshark postdissector that puts teardown's packet comment (the TCP
-- state transitions) into the Info column and the packet tree, so Statistics → Flow Graph
-- reads like the termination diagram of a textbook.
--
-- Load it once:   wireshark -X lua_script:scripts/teardown.lua captures/active-close.pcapng
-- or for good:    copy it into ~/.local/lib/wireshark/plugins/ (Help → About → Folders).
-- Check it:       tshark -X lua_script:scripts/teardown.lua -r FILE -T fields -e _ws.col.Info

local teardown = Proto("teardown", "teardown TCP state annotation")
local f_state = ProtoField.string("teardown.states", "States")
teardown.fields = { f_state }

local f_comment = Field.new("frame.comment")

-- "server ESTABLISHED → FIN_WAIT_1 (sent FIN, RFC 9293 §3.10.4; kernel agrees); client ..."
-- becomes "server ESTABLISHED → FIN_WAIT_1; client ...": the column keeps the transitions.
-- Where a bracket stood before a comma or semicolon ("for 0.3 ms (NFQUEUE), then
-- released"), no space is left before it.
local function short(text)
    local s = text:gsub("%b()", ""):gsub("%s+([;,])", "%1"):gsub("%s+", " ")
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

function teardown.dissector(tvb, pinfo, tree)
    local comments = { f_comment() }
    if #comments == 0 then
        return
    end
    local texts = {}
    for _, c in ipairs(comments) do
        texts[#texts + 1] = tostring(c.value or c)
    end
    local text = table.concat(texts, "; ")
    local states = short(text)
    if states:find("→") or states:find("no state change") then
        pinfo.cols.info:append("  [" .. states .. "]")
    end
    local subtree = tree:add(teardown, tvb(), "teardown")
    subtree:add(f_state, states)
    subtree:append_text(": " .. states)
end

register_postdissector(teardown)
