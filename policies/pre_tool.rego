# pre_tool: runs before a server-side tool call executes.
#
# input: {principal, model, tool: <name>, arguments: {...}}
# data.tako.config keys read: blocked_tools, approval_tools.
package tako.pre_tool

import data.tako.lib

decision := {"action": "deny", "reason": concat("", ["tool ", input.tool, " is blocked"])} if {
	input.tool in lib.tenant_values("blocked_tools")
} else := {"action": "require_approval", "reason": concat("", ["tool ", input.tool, " requires approval"])} if {
	input.tool in lib.tenant_values("approval_tools")
} else := {"action": "allow"}
