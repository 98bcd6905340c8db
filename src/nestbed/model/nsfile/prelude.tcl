# nestbed's NS evaluator: runs an NS file (NS-2 Tcl as Emulab's ns2ir read it) in a safe interpreter and prints
# what it built as JSON lines on stdout. Usage: tclsh prelude.tcl FILE.ns
#
# The file runs in `interp create -safe` (no exec, open, socket, file, source); the master holds every object and
# records every call with its line. Objects are named as Emulab named them: by the global variable they are
# first assigned to (n(1) -> n-1), unnamed ones tbnode-n<id>, tblink-l<id>, tblan-lan<id> (one counter).
# Python (nestbed/model/nsfile/) gives the records their meaning; here there is only naming and bookkeeping.

namespace eval ::nb {
    variable file [lindex $::argv 0]
    variable objects [dict create]      ;# id -> {kind name line args}
    variable by_name [dict create]      ;# current name -> id
    variable out {}                     ;# records, in order (ids resolved at the end)
    variable counter 0                  ;# Emulab's id_counter: nodes, links, LANs, paths, unknown ns methods
    variable news 0                     ;# Emulab's new_counter: objects made by `new` (Simulator1, Program2)
    variable queues [dict create]       ;# link id + direction -> its queue object's name
    variable fresh ""                   ;# the id made by the last creator (Emulab's last_class)
    variable slave [interp create -safe]
}

proc ::nb::json {s} {
    set s [string map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t] $s]
    if {[regexp {[\x00-\x1f\x7f]} $s]} {         ;# any other control character, as JSON wants it: \u00XX
        set escaped ""
        foreach ch [split $s ""] {
            scan $ch %c code
            append escaped [expr {$code < 32 || $code == 127 ? [format \\u%04x $code] : $ch}]
        }
        set s $escaped
    }
    return "\"$s\""
}

proc ::nb::record {type line fields} {
    variable out
    if {![string is integer -strict $line]} { set line 0 }     ;# the file can call the aliases itself
    lappend out [list $type $line $fields]
}

# An argument as recorded: an object (by id, so a later rename shows) or a string.
proc ::nb::ref {value} {
    variable by_name
    if {[dict exists $by_name $value]} { return [list o [dict get $by_name $value]] }
    return [list s $value]
}

proc ::nb::make {kind name line args} {
    variable objects; variable by_name; variable slave; variable fresh; variable out
    if {[dict exists $by_name $name] || [interp eval $slave [list info commands $name]] ne ""} {
        error "an object named \"$name\" exists already"
    }
    set id [dict size $objects]
    dict set objects $id [dict create kind $kind name $name line $line args [lmap a $args {ref $a}] seq [llength $out]]
    dict set by_name $name $id
    interp eval $slave [list proc $name {args} "__nb_call $id \[__nb_where\] {*}\[__nb_expand \$args\]"]
    set fresh $id
    return $name
}

proc ::nb::internal {prefix} {
    variable counter
    incr counter
    return "$prefix$counter"
}

# `set var value` at global level, value the object just made: the object takes the variable's name.
proc ::nb::assigned {var value} {
    variable fresh; variable objects; variable by_name; variable slave
    set id $fresh
    set fresh ""
    if {$id eq "" || [dict get $objects $id name] ne $value} { return $value }
    set name [string map {( - ) {}} $var]
    if {[interp eval $slave [list info commands $name]] ne "" || [dict exists $by_name $name]} {
        error "can't rename to \"$name\": command already exists"
    }
    interp eval $slave [list rename $value $name]
    dict unset by_name $value
    dict set by_name $name $id
    dict set objects $id name $name
    return $name
}

proc ::nb::newname {class} {
    variable news
    incr news
    return "[string map {/ _} $class]$news"
}

# A link's queue (one per direction, made on first use, as Emulab's toqueue/fromqueue are).
proc ::nb::queue {id line direction} {
    variable queues; variable objects
    if {![dict exists $queues $id/$direction]} {
        dict set queues $id/$direction [make queue [newname Queue] $line [dict get $objects $id name] $direction]
    }
    return [dict get $queues $id/$direction]
}

proc ::nb::unnamed {kind prefix line args} {
    return [make $kind [internal $prefix] $line {*}$args]
}

proc ::nb::call {id line method args} {
    variable objects
    set kind [dict get $objects $id kind]
    set name [dict get $objects $id name]
    record call $line [dict create target [list o $id] cmd $method args [lmap a $args {ref $a}]]
    switch -- $kind/$method {
        simulator/node - simulator/bridge { return [unnamed node tbnode-n $line] }
        simulator/duplex-link {
            if {[llength $args] < 5} { error "wrong # args: should be \"$name duplex-link node1 node2 bandwidth delay queue-type\"" }
            return [unnamed link tblink-l $line {*}$args]
        }
        simulator/make-lan - simulator/make-cloud {
            if {[llength $args] < 3} { error "wrong # args: should be \"$name make-lan \\\"node1 node2 ...\\\" bandwidth delay\"" }
            return [unnamed lan tblan-lan $line {*}$args]
        }
        simulator/make-path { return [unnamed path tbpath-path $line {*}$args] }
        simulator/event-sequence {
            set made [unnamed sequence tbseq-seq $line]
            foreach words [lindex $args 0] { events $made $line "" [list $words] }
            if {[llength $args] > 1} { warn $line "event-sequence … catch {…}: its catch part is not played" }
            return $made
        }
        simulator/event-timeline { return [unnamed timeline tbtl-tl $line {*}$args] }
        simulator/at - timeline/at {
            if {[llength $args] != 2} { error "wrong # args: should be \"$name at time event\"" }
            events $name $line [lindex $args 0] [split [lindex $args 1] ";"]
            return ""
        }
        node/program-agent { return [make program [newname Program] $line program-agent $name {*}$args] }
        simulator/link - simulator/lanlink { return [make simplex [newname sl] $line {*}$args] }
        simulator/run - simulator/rtproto - simulator/connect - simulator/attach-agent -
        simulator/event-group - simulator/define-template-parameter { return "" }
        simulator/duplex-link-op { warn $line "$name duplex-link-op: nam's drawing hints; ignored"; return "" }
        simulator/simplex-link {
            warn $line "$name simplex-link: not supported (Emulab's links are duplex); use duplex-link and tb-set-link-simplex-params"
            return ""
        }
        simulator/cost { warn $line "$name cost: the mapper's link costs; ignored"; return "" }
        simplex/queue { return [queue $id $line to] }
        link/set - lan/set {
            if {[lindex $args 0] in {toqueue fromqueue}} { return [queue $id $line [string range [lindex $args 0] 0 end-5]] }
            return ""
        }
        default {
            if {$kind eq "simulator" && ![string match tb-* $method]} {
                warn $line "$name $method: not an NS method nestbed knows; ignored"
                return [unnamed null tbnull-null $line]
            }
            # Emulab's NSObject unknown: a warning. Nodes' add-route, queues' and links' set, Programs', agents'
            # and applications' methods have their meaning in Python (semantics, routes, queues, events).
            if {$kind in {node link lan simplex queue} && !($kind eq "node" && $method eq "add-route")
                    && !($kind eq "queue" && $method eq "set") && !($kind in {link lan} && $method eq "set")} {
                warn $line "$name $method: not a $kind method nestbed gives a meaning; ignored"
            }
            return ""
        }
    }
}

# The events of `$ns at T "e; e"`, `$tl at T "…"` and a sequence's lines, each as its words (Emulab's make_event
# splits on `;`, each part a list `obj cmd args`, `#` parts skipped); an object word is kept by id.
proc ::nb::events {parent line time parts} {
    variable by_name
    foreach part $parts {
        set part [string trim $part]
        if {$part eq "" || [string index $part 0] eq "#"} { continue }
        if {[catch {llength $part}]} {
            warn $line "at $time \"$part\": not an event (obj cmd args)"
            continue
        }
        record event $line [dict create parent [list o [dict get $by_name $parent]] time [list s $time] \
            words [lmap word $part {ref $word}]]
    }
}

proc ::nb::warn {line message} { record warning $line [dict create message [list s $message]] }

# tb-* and other global commands: recorded; their meaning is Python's.
proc ::nb::global {line cmd args} {
    record call $line [dict create target [list s ""] cmd $cmd args [lmap a $args {ref $a}]]
    return ""
}

proc ::nb::new {line class args} {
    switch -glob -- $class {
        Simulator { return [make simulator [newname Simulator] $line] }
        Program - EventGroup - Agent/* - Application/* - Firewall - Topography - Console - Queue* {
            return [make [string tolower [lindex [split $class /] 0]] [newname $class] $line $class {*}$args]
        }
        default {
            warn $line "new $class: a class nestbed does not know; ignored"
            return [make null [newname null] $line $class]
        }
    }
}

proc ::nb::source_file {line path} {
    if {[file tail $path] eq "tb_compat.tcl"} { return "" }
    error "source $path: an NS file may source only tb_compat.tcl"
}

proc ::nb::unknown {line args} {
    error "unknown command \"[lindex $args 0]\" (an NS or tb-* command nestbed does not know)"
}

# What the slave sees before the file runs.
interp alias $::nb::slave __nb_call {} ::nb::call
interp alias $::nb::slave __nb_new {} ::nb::new
interp alias $::nb::slave __nb_global {} ::nb::global
interp alias $::nb::slave __nb_assigned {} ::nb::assigned
interp alias $::nb::slave __nb_source {} ::nb::source_file
interp alias $::nb::slave __nb_unknown {} ::nb::unknown
interp eval $::nb::slave [list set ::__nb_file $::nb::file]
interp eval $::nb::slave {
    # NS files print progress with puts; a safe interpreter has no stdout: their output goes nowhere.
    proc puts {args} {}
    # The file's own line of the command that is running (calls from procs and loops included).
    proc __nb_where {} {
        for {set level [expr {[info frame] - 2}]} {$level > 0} {incr level -1} {
            set frame [info frame $level]
            if {[dict exists $frame file] && [dict get $frame file] eq $::__nb_file} {
                return [dict get $frame line]
            }
        }
        return 0
    }
    rename set __nb_set
    proc set {args} {
        if {[llength $args] == 2 && [uplevel 1 {info level}] == 0} {
            return [uplevel 1 [list __nb_set [lindex $args 0] [__nb_assigned {*}$args]]]
        }
        return [uplevel 1 [list __nb_set {*}$args]]
    }
    # `$ns event-sequence {lines} ?catch {lines}?`: each line's words substituted in the caller, as Emulab's
    # `eval list $line` does (the caller is two levels up: this proc's caller is the object's proc).
    proc __nb_expand {arguments} {
        if {[lindex $arguments 0] ne "event-sequence"} { return $arguments }
        set expanded [list event-sequence]
        foreach body [lrange $arguments 1 end] {
            if {$body eq "catch"} { lappend expanded catch; continue }
            set lines [list]
            foreach line [split $body "\n"] {
                set line [string trim $line]
                if {$line eq "" || [string index $line 0] eq "#"} { continue }
                lappend lines [uplevel 2 [concat list $line]]
            }
            lappend expanded $lines
        }
        return $expanded
    }
    proc new {class args} { return [__nb_new [__nb_where] $class {*}$args] }
    proc source {path} { return [__nb_source [__nb_where] $path] }
    proc unknown {args} {
        if {[string match tb-* [lindex $args 0]]} { return [__nb_global [__nb_where] {*}$args] }
        return [__nb_unknown [__nb_where] {*}$args]
    }
}

proc ::nb::value {arg} {
    variable objects
    lassign $arg how value
    if {$how eq "o"} { return [json [dict get $objects $value name]] }
    return [json $value]
}

proc ::nb::values {args_} { return "\[[join [lmap a $args_ {value $a}] ,]\]" }

proc ::nb::emit {} {
    variable objects; variable out
    dict for {id object} $objects {
        puts "{\"t\":\"object\",\"seq\":[dict get $object seq],\"kind\":[json [dict get $object kind]],\"name\":[json [dict get $object name]],\"line\":[dict get $object line],\"args\":[values [dict get $object args]]}"
    }
    set seq -1
    foreach item $out {
        lassign $item type line fields
        incr seq
        if {$type eq "call"} {
            puts "{\"t\":\"call\",\"seq\":$seq,\"line\":$line,\"target\":[value [dict get $fields target]],\"cmd\":[json [dict get $fields cmd]],\"args\":[values [dict get $fields args]]}"
        } elseif {$type eq "event"} {
            puts "{\"t\":\"event\",\"seq\":$seq,\"line\":$line,\"parent\":[value [dict get $fields parent]],\"time\":[value [dict get $fields time]],\"words\":[values [dict get $fields words]]}"
        } else {
            puts "{\"t\":[json $type],\"line\":$line,\"message\":[value [dict get $fields message]]}"
        }
    }
}

if {[catch {interp invokehidden $::nb::slave source $::nb::file} message options]} {
    set line 0
    regexp "\\(file \"[string map {\\ \\\\ . \\. ( \\( ) \\) \[ \\\[ \] \\\] * \\* + \\+ ? \\? ^ \\^ $ \\$ | \\|} $::nb::file]\" line (\[0-9\]+)\\)" [dict get $options -errorinfo] -> line
    ::nb::emit
    puts "{\"t\":\"error\",\"line\":$line,\"message\":[::nb::json $message]}"
    exit 0
}
::nb::emit
exit 0
