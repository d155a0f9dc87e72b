# aiida-stack tab completion for bash, for ./stack and for invoke in the checkout.
# Add to ~/.bashrc:   source <(/path/to/checkout/stack --print-completion-script bash)
# Task names and options come from invoke's own completion (--complete); profile names and
# backup ids from what the stack last listed (no container is asked while you press tab).
_aiida_stack_complete() {
    local candidates
    candidates=$("${COMP_WORDS[0]}" --complete -- "${COMP_WORDS[@]:0:COMP_CWORD+1}" 2>/dev/null)
    COMPREPLY=( $(compgen -W "${candidates}" -- "${COMP_WORDS[COMP_CWORD]}") )
}
complete -F _aiida_stack_complete -o default stack invoke inv
