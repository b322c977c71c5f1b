#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Static checks of libfuse-zc's layout.

  zc_layout.py layering SRC_DIR [STATIC_LIB]
      Each module is a .c with its .h.  No module may depend on a module
      that depends on it: the graph of `#include "x.h"` between the modules
      of SRC_DIR must have no cycle, and so must the graph of symbols the
      objects of STATIC_LIB use from each other (nm), which must also stay
      inside what the includes allow.  Each .c includes its own header
      first.
  zc_layout.py exports HEADER MAP SHARED_LIB
      The public functions of HEADER, the symbols listed in the version
      script MAP and the symbols SHARED_LIB exports are the same set.
  zc_layout.py self-test
      Both checks fail on trees built to break them.
"""
import os
import re
import subprocess
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)


def module_includes(src):
    """{module: set of modules its .c and .h include}, and the problems."""
    deps, problems = {}, []
    for name in sorted(os.listdir(src)):
        stem, ext = os.path.splitext(name)
        if ext not in ('.c', '.h'):
            continue
        with open(os.path.join(src, name)) as f:
            text = f.read()
        local = [m for m in INCLUDE.findall(text)
                 if os.path.exists(os.path.join(src, m + '.h'))]
        deps.setdefault(stem, set()).update(m for m in local if m != stem)
        if ext == '.c' and os.path.exists(os.path.join(src, stem + '.h')):
            if not local or local[0] != stem:
                problems.append(f'{name}: its first include is not "{stem}.h"')
    return deps, problems


def find_cycle(graph):
    """A list of nodes forming a cycle, or None."""
    state = {}

    def visit(node, path):
        state[node] = 'open'
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def closure(graph, node):
    seen, todo = set(), [node]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def symbol_uses(lib):
    """{module: set of modules whose symbols its object uses} from nm."""
    out = subprocess.run(['nm', '-A', lib], check=True, capture_output=True,
                         text=True).stdout
    defined, undefined = {}, {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        member = parts[0].split(':')[-2]
        module = member.split('.')[0]
        kind, sym = parts[-2], parts[-1]
        if kind == 'U':
            undefined.setdefault(module, set()).add(sym)
        elif kind.isupper():
            defined[sym] = module
    uses = {m: set() for m in set(defined.values()) | set(undefined)}
    for module, syms in undefined.items():
        uses[module].update(defined[s] for s in syms
                            if s in defined and defined[s] != module)
    return uses


def check_layering(src, lib=None):
    deps, problems = module_includes(src)
    cycle = find_cycle(deps)
    if cycle:
        problems.append('include cycle: ' + ' -> '.join(cycle))
    if lib:
        uses = symbol_uses(lib)
        cycle = find_cycle(uses)
        if cycle:
            problems.append('symbol cycle: ' + ' -> '.join(cycle))
        for module, used in sorted(uses.items()):
            hidden = used - closure(deps, module)
            if hidden:
                problems.append(f'{module} uses {", ".join(sorted(hidden))} '
                                'without including it')
    return deps, problems


PROTO = re.compile(r'^(?!static)[A-Za-z_][\w \*]*?\b(fusezc_\w+)\s*\(', re.M)
MAP_SYM = re.compile(r'\b(fusezc_\w+)\s*;')


def check_exports(header, map_file, shared):
    with open(header) as f:
        declared = set(PROTO.findall(f.read()))
    with open(map_file) as f:
        listed = set(MAP_SYM.findall(f.read()))
    out = subprocess.run(['nm', '-D', '--defined-only', shared], check=True,
                         capture_output=True, text=True).stdout
    exported = {line.split()[-1].split('@')[0] for line in out.splitlines()
                if len(line.split()) >= 3 and line.split()[1] in 'TDBRW'}
    exported.discard('FUSEZC_0')
    problems = []
    for what, names in (('declared in the header', declared),
                        ('listed in the map', listed),
                        ('exported by the library', exported)):
        for other_what, other in (('the header', declared), ('the map', listed),
                                  ('the library', exported)):
            missing = names - other
            if missing and names is not other:
                problems.append(f'{", ".join(sorted(missing))}: {what}, '
                                f'not in {other_what}')
    return problems


def self_test():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            'low.h': '', 'low.c': '#include "low.h"\n',
            'mid.h': '#include "low.h"\n', 'mid.c': '#include "mid.h"\n',
            'top.h': '', 'top.c': '#include "top.h"\n#include "mid.h"\n',
        }
        for name, text in files.items():
            with open(os.path.join(tmp, name), 'w') as f:
                f.write(text)
        if check_layering(tmp)[1]:
            failures.append('a layered tree was refused')
        with open(os.path.join(tmp, 'low.c'), 'w') as f:
            f.write('#include "low.h"\n#include "top.h"\n')
        problems = check_layering(tmp)[1]
        if not any('include cycle' in p for p in problems):
            failures.append('a cycle low -> top -> mid -> low was not found')
        with open(os.path.join(tmp, 'low.c'), 'w') as f:
            f.write('#include "mid.h"\n')
        if not any('first include' in p for p in check_layering(tmp)[1]):
            failures.append('a .c not including its own header first passed')
        with open(os.path.join(tmp, 'pub.h'), 'w') as f:
            f.write('int fusezc_a(void);\nvoid fusezc_b(int x);\n'
                    'static inline int fusezc_c(void) { return 0; }\n')
        with open(os.path.join(tmp, 'pub.map'), 'w') as f:
            f.write('V { global: fusezc_a; local: *; };\n')
        with open(os.path.join(tmp, 'pub.c'), 'w') as f:
            f.write('int fusezc_a(void) { return 0; }\n'
                    'void fusezc_b(int x) { (void)x; }\n')
        so = os.path.join(tmp, 'libpub.so')
        subprocess.run(['cc', '-shared', '-fPIC', '-o', so,
                        os.path.join(tmp, 'pub.c')], check=True)
        problems = check_exports(os.path.join(tmp, 'pub.h'),
                                 os.path.join(tmp, 'pub.map'), so)
        if not any(p.startswith('fusezc_b:') and 'not in the map' in p
                   for p in problems):
            failures.append(f'fusezc_b missing from the map was not found: {problems}')
    return failures


def main(argv):
    if len(argv) >= 3 and argv[1] == 'layering':
        deps, problems = check_layering(argv[2], argv[3] if len(argv) > 3 else None)
        for module in sorted(deps):
            print(f'{module}: {" ".join(sorted(deps[module])) or "-"}')
    elif len(argv) == 5 and argv[1] == 'exports':
        problems = check_exports(argv[2], argv[3], argv[4])
    elif len(argv) == 2 and argv[1] == 'self-test':
        problems = self_test()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print('FAIL: ' + p)
    if not problems:
        print('ok')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
