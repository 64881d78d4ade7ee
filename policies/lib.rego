# Shared helpers for tako's policy stages.
#
# Operator settings live under data.tako.config (the gateway's `policy.data`). List
# settings take either a plain list (every tenant) or an object keyed by tenant id,
# where the key "*" applies to every tenant.
package tako.lib

default config := {}

config := data.tako.config

default redaction_text := "[REDACTED]"

redaction_text := config.redaction_text

tenant := object.get(input, ["principal", "tenant_id"], "")

# The set of values configured under `name` for the caller's tenant.
tenant_values(name) := {x | some x in object.get(config, name, [])} if {
	is_array(object.get(config, name, []))
}

tenant_values(name) := {x | some key in ["*", tenant]; some x in object.get(config[name], key, [])} if {
	is_object(config[name])
}

# The forced model for the caller's tenant: the tenant's own entry wins over "*".
forced_model := config.forced_models[tenant]

forced_model := config.forced_models["*"] if {
	not config.forced_models[tenant]
}

phrase_patterns := {p: redaction_text | some p in tenant_values("blocked_phrases")}

redact(text) := strings.replace_n(phrase_patterns, text)

denied_phrases_in(text) := {phrase |
	some phrase in tenant_values("denied_phrases")
	contains(lower(text), lower(phrase))
}

# Message content rewriting: plain strings and the text parts of multi-part content.
redact_content(content) := redact(content) if is_string(content)

redact_content(content) := [redact_part(part) | some part in content] if is_array(content)

redact_content(content) := content if {
	not is_string(content)
	not is_array(content)
}

redact_part(part) := object.union(part, {"text": redact(part.text)}) if {
	part.type == "text"
	is_string(part.text)
}

redact_part(part) := part if not is_text_part(part)

is_text_part(part) if {
	part.type == "text"
	is_string(part.text)
}

message_texts contains text if {
	some message in input.messages
	is_string(message.content)
	text := message.content
}

message_texts contains text if {
	some message in input.messages
	is_array(message.content)
	some part in message.content
	is_text_part(part)
	text := part.text
}

reasons_text(reasons) := concat("; ", sort([r | some r in reasons]))
