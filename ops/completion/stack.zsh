# aiida-stack tab completion for zsh, for ./stack and for invoke in the checkout.
# Add to ~/.zshrc, after compinit:   source <(/path/to/checkout/stack --print-completion-script zsh)
# Task names and options come from invoke's own completion (--complete); profile names and
# backup ids from what the stack last listed (no container is asked while you press tab).
_aiida_stack_complete() {
    local -a candidates
    candidates=(${(f)"$(${words[1]} --complete -- ${words[1,CURRENT]} 2>/dev/null)"})
    compadd -a candidates
}
compdef _aiida_stack_complete stack invoke inv
