"""The questions the load benchmarks ask of the samples (bench/page_load.py through the
page, bench/api_load.py through the API), in both languages, each answered by a sample."""

QUESTIONS = [
    "What does error VPN-0x2F mean?",
    "When are taxi fares reimbursed?",
    "How many unused leave days can I carry over?",
    "在宅勤務は週何日までですか",
    "社員食堂の昼食は1食いくらですか",
    "What is the minimum password length for new joiners?",
]
