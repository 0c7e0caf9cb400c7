-- teardown.lua: a Wireshark postdissector that puts teardown's packet comment (the TCP
-- state transitions) into the Info column and the packet tree, so Statistics → Flow Graph
-- (All Flows) reads like the termination diagram of a textbook: the states come first.
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

-- The head of the Info column, short enough for Statistics → Flow Graph (All Flows), which
-- cuts an arrow's label after about 40 characters: each side's new states, then what befell
-- the segment. "[server FIN_WAIT_1 · client CLOSE_WAIT]", "[no change]",
-- "[again +206 ms · server's ACK lost]"; "[C FIN_WAIT_1→CLOSING · S CLOSING]" where the words
-- would not fit.
local function head(states)
    local order, to = {}, {}
    for role, _, new in states:gmatch("(%a+) ([%u_%d]+) → ([%u_%d]+)") do
        if role == "client" or role == "server" then
            if not to[role] then
                order[#order + 1] = role
                to[role] = {}
            end
            table.insert(to[role], new)
        end
    end
    local notes = {}
    local after = states:match("previous segment after (%d+) ms")
    if after then
        notes[#notes + 1] = "again +" .. after .. " ms"
    elseif states:find("retransmission") then
        notes[#notes + 1] = "again"
    end
    local who, flags = states:match("the (%a+)'s ([%u,]+) segment sent at [%d.]+ ms never arrived")
    if who then
        notes[#notes + 1] = who .. "'s " .. flags .. " lost"
    elseif states:find("its ACK was lost or never sent") then
        notes[#notes + 1] = "its ACK lost?"
    end
    local function join(short)
        local parts = {}
        for _, role in ipairs(order) do
            local name = short and role:sub(1, 1):upper() or role
            parts[#parts + 1] = name .. " " .. table.concat(to[role], "→")
        end
        if #parts == 0 and #notes == 0 and states:find("no state change") then
            parts[1] = "no change"
        end
        for _, n in ipairs(notes) do
            parts[#parts + 1] = n
        end
        if #parts == 0 then
            return nil
        end
        return "[" .. table.concat(parts, " · ") .. "]"
    end
    local h = join(false)
    -- Characters, not bytes (Wireshark's Lua 5.2 has no utf8 library): the bytes that do not
    -- continue a UTF-8 sequence.
    if h and select(2, h:gsub("[^\128-\191]", "")) > 40 then
        h = join(true)
    end
    return h
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
    -- The short head first (the Flow Graph shows it), the whole story at the end.
    local h = head(text)
    if h then
        pinfo.cols.info:prepend(h .. " ")
    end
    if states:find("→") or states:find("no state change") then
        pinfo.cols.info:append("  [" .. states .. "]")
    end
    local subtree = tree:add(teardown, tvb(), "teardown")
    subtree:add(f_state, states)
    subtree:append_text(": " .. states)
end

register_postdissector(teardown)
