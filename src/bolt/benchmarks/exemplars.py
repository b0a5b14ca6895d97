"""Few-shot exemplars, written for bolt (not taken from any other project's prompts).

Each exemplar is a document in its dataset's own fields, so the tasks format it exactly
like a test question: GSM8K (``question``, ``answer`` ending in ``#### N``), MATH
(``problem``, ``solution`` with a ``\\boxed{}`` answer), MMLU (``question``, ``choices``,
``answer`` index, and the ``reasoning`` that the chain-of-thought target shows).
"""

from __future__ import annotations

GSM8K = [
    {
        "question": "A baker fills 6 trays with 14 rolls each. She sells 59 rolls in the morning. How many rolls are left?",
        "answer": "She baked 6 * 14 = 84 rolls. After selling 59, she has 84 - 59 = 25 rolls left.\n#### 25",
    },
    {
        "question": "Omar reads 12 pages a day for a week and then 20 pages on Sunday. How many pages did he read in total?",
        "answer": "In a week he reads 7 * 12 = 84 pages. With Sunday's pages he has read 84 + 20 = 104 pages.\n#### 104",
    },
    {
        "question": "A bike costs $240. Lena has saved $95 and earns $29 each week. After 5 weeks, how much more does she need?",
        "answer": "In 5 weeks she earns 5 * 29 = 145 dollars, so she has 95 + 145 = 240 dollars. She needs 240 - 240 = 0 dollars more.\n#### 0",
    },
    {
        "question": "A garden has 3 rows of 18 tulips and 4 rows of 11 daisies. How many more tulips than daisies are there?",
        "answer": "There are 3 * 18 = 54 tulips and 4 * 11 = 44 daisies. So there are 54 - 44 = 10 more tulips.\n#### 10",
    },
    {
        "question": "A tank holds 1,200 liters. It is one quarter full. How many liters must be added to fill it?",
        "answer": "One quarter is 1200 / 4 = 300 liters. To fill it, add 1200 - 300 = 900 liters.\n#### 900",
    },
    {
        "question": "Tickets cost $7 for children and $12 for adults. A group of 3 adults and 5 children buys tickets. What do they pay?",
        "answer": "Adults pay 3 * 12 = 36 dollars and children pay 5 * 7 = 35 dollars. Together they pay 36 + 35 = 71 dollars.\n#### 71",
    },
    {
        "question": "Jun has 45 marbles. He gives a third of them to his sister and then buys 8 more. How many marbles does he have?",
        "answer": "A third of 45 is 45 / 3 = 15, so he keeps 45 - 15 = 30. After buying more he has 30 + 8 = 38 marbles.\n#### 38",
    },
    {
        "question": "A train travels 90 km per hour for 2 hours and then 60 km per hour for 3 hours. How far does it go?",
        "answer": "First it goes 90 * 2 = 180 km, then 60 * 3 = 180 km. In total it travels 180 + 180 = 360 km.\n#### 360",
    },
]

MATH = [
    {
        "problem": "Solve for $x$: $3x - 7 = 11$.",
        "solution": "Adding 7 to both sides gives $3x = 18$, and dividing by 3 gives $x = \\boxed{6}$.",
    },
    {
        "problem": "What is the sum of the interior angles of a hexagon, in degrees?",
        "solution": "A polygon with $n$ sides has interior angles summing to $180(n-2)$ degrees. For $n = 6$ that is $180 \\cdot 4 = \\boxed{720}$.",
    },
    {
        "problem": "Simplify $\\frac{2}{3} + \\frac{5}{6}$.",
        "solution": "With the common denominator 6, $\\frac{4}{6} + \\frac{5}{6} = \\frac{9}{6} = \\boxed{\\frac{3}{2}}$.",
    },
    {
        "problem": "How many positive divisors does $36$ have?",
        "solution": "Since $36 = 2^2 \\cdot 3^2$, it has $(2+1)(2+1) = \\boxed{9}$ positive divisors.",
    },
]

MMLU_STEM = [
    {
        "question": "What is the derivative of $x^3$ with respect to $x$?",
        "choices": ["$x^2$", "$3x^2$", "$3x^3$", "$x^4/4$"],
        "answer": 1,
        "subject": "college_mathematics",
        "reasoning": "By the power rule, the derivative of $x^n$ is $n x^{n-1}$, so the derivative of $x^3$ is $3x^2$.",
    },
    {
        "question": "Which particle carries a negative electric charge?",
        "choices": ["Proton", "Neutron", "Electron", "Photon"],
        "answer": 2,
        "subject": "high_school_physics",
        "reasoning": "Protons are positive, neutrons and photons are neutral, and electrons are negative.",
    },
    {
        "question": "How many bits are needed to represent 200 distinct values?",
        "choices": ["7", "8", "9", "200"],
        "answer": 1,
        "subject": "computer_security",
        "reasoning": "7 bits give 128 values, which is too few, while 8 bits give 256 values, which is enough.",
    },
    {
        "question": "What is the pH of a neutral aqueous solution at 25 degrees Celsius?",
        "choices": ["0", "1", "7", "14"],
        "answer": 2,
        "subject": "high_school_chemistry",
        "reasoning": "At 25 degrees Celsius water has equal hydrogen and hydroxide concentrations of $10^{-7}$ M, so its pH is 7.",
    },
]
