# pre_chat: runs before a chat request reaches an orchestrator.
#
# input: {principal: {tenant_id, user_id, key_id, scopes}, model, messages, tools, metadata}
# data.tako.config keys read: denied_models, allowed_models, blocked_tools, denied_phrases,
# forced_models, blocked_phrases, redaction_text.
package tako.pre_chat

import data.tako.lib

deny_reasons contains reason if {
	input.model in lib.tenant_values("denied_models")
	reason := concat("", ["model ", input.model, " is not allowed for tenant ", lib.tenant])
}

deny_reasons contains reason if {
	allowed := lib.tenant_values("allowed_models")
	count(allowed) > 0
	not input.model in allowed
	reason := concat("", ["model ", input.model, " is not in the allowed models of tenant ", lib.tenant])
}

deny_reasons contains reason if {
	some tool in object.get(input, "tools", [])
	name := tool_name(tool)
	name in lib.tenant_values("blocked_tools")
	reason := concat("", ["tool ", name, " is blocked"])
}

deny_reasons contains reason if {
	some text in lib.message_texts
	some phrase in lib.denied_phrases_in(text)
	reason := concat("", ["messages contain the denied phrase ", phrase])
}

tool_name(tool) := tool.function.name if {
	is_string(tool.function.name)
} else := tool.name if {
	is_string(tool.name)
} else := tool if {
	is_string(tool)
}

redact_message(m) := object.union(m, {"content": lib.redact_content(m.content)}) if {
	is_string(m.content)
} else := object.union(m, {"content": lib.redact_content(m.content)}) if {
	is_array(m.content)
} else := m

redacted_messages := [redact_message(m) | some m in input.messages]

messages_changed if {
	is_array(input.messages)
	redacted_messages != input.messages
}

forced := lib.forced_model if lib.forced_model != input.model

# Redacted messages ride along with a forced model, so both rewrites apply.
redaction := {"messages": redacted_messages} if messages_changed

default redaction := {}

decision := {"action": "deny", "reason": lib.reasons_text(deny_reasons)} if {
	count(deny_reasons) > 0
} else := object.union({"action": "force_model", "reason": concat("", ["tenant ", lib.tenant, " is pinned to model ", forced]), "model": forced}, redaction) if {
	forced
} else := object.union({"action": "redact_messages", "reason": "blocked phrases redacted"}, redaction) if {
	messages_changed
} else := {"action": "allow"}
