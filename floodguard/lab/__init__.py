"""The attack lab: private network namespaces, legitimate phones, attack generators, reports.

``floodguard lab`` (see ``command.py``) builds a registrar host, a phones namespace, an
attackers namespace and an office behind its own NAT router joined by veth links
(``topology.py``), applies floodguard's rules there with ``floodguard apply``, starts the guard
and a registrar, runs legitimate phones (``phones.py``) against one attack at a time
(``attacks.py``, ``botnet.py``, ``guessers.py``; what the guessers share in ``dialog.py``),
samples the kernel counters and prints or writes the result (``report.py``). The scenarios,
each with its description, its attackers and its report rows, are one registry
(``scenarios.py``); ``runner.py`` orchestrates a run with ``host.py`` (registrar and guard;
Kamailio in ``kamailio.py``), ``settings.py`` and ``procs.py``; the precision scenarios'
numbers and checks are ``precision.py``'s. Everything it creates lives in its own namespaces
and is removed afterwards, also on Ctrl-C or an error.
"""
