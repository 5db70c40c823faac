# Sourced by scripts/deploy-*.sh: reads a .env file without ever printing a value.
# The caller defines die() and sets $env_file and $tag (its name, for messages).

# Reads $env_file into the parallel arrays names/values. Errors name the line, never its value.
names=()
values=()
read_env_file() {
    local line name value n=0
    while IFS= read -r line || [[ -n "$line" ]]; do
        n=$((n + 1))
        line=${line%$'\r'}
        line=${line#"${line%%[![:space:]]*}"}
        [[ -z "$line" || "$line" == \#* ]] && continue
        line=${line#export }
        if [[ ! "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=(.*)$ ]]; then
            die "$env_file:$n: expected NAME=VALUE"
        fi
        name=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        value=${value#"${value%%[![:space:]]*}"}
        if [[ "$value" =~ ^\"(.*)\"[[:space:]]*$ || "$value" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
            value=${BASH_REMATCH[1]}
        else
            value=${value%%[[:space:]]#*}
            value=${value%"${value##*[![:space:]]}"}
        fi
        if [[ -z "$value" ]]; then
            echo "$tag: $env_file:$n: $name is empty; skipped (the server treats empty as unset)" >&2
            continue
        fi
        names+=("$name")
        values+=("$value")
    done <"$env_file"
}
