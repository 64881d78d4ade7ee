# post_chat: runs on the assistant's answer before it is returned.
#
# input: {principal, model, response: <text>}
# data.tako.config keys read: denied_phrases, blocked_phrases, redaction_text.
package tako.post_chat

import data.tako.lib

redacted := lib.redact(input.response)

denied := lib.denied_phrases_in(input.response)

decision := {"action": "deny", "reason": concat("", ["response contains the denied phrases ", lib.reasons_text(denied)])} if {
	count(denied) > 0
} else := {"action": "redact_response", "reason": "blocked phrases redacted", "response": redacted} if {
	redacted != input.response
} else := {"action": "allow"}
